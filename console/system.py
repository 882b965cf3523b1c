"""The console's own state, for staff: /system/ and GET /mgmt/system. Each controller loop
(leader or standby, host, pid, last pass and its duration), the worker pool (queue depth, steps
running, the last task a worker finished), the database, the broker, each engine (its breaker:
fleet.breakers) and the audit sealer (entries pending, the oldest one's age). A fixed number of
queries; nothing here changes anything."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count, Min
from django.utils import timezone
from django_q.models import OrmQ

from audit.models import AuditEntry
from console.models import WorkerBeat
from controller.loop import loop_periods
from controller.models import LoopBeat
from fleet.models import EngineState, Service
from workflows.models import StepRun

log = logging.getLogger(__name__)
FRESH = timedelta(seconds=15)  # a loop that has not beaten for this long is reported stale
SHOWN = timedelta(minutes=10)  # beats older than this are of processes long gone


def status() -> dict[str, Any]:
    now = timezone.now()
    return {
        "at": now,
        "controllers": controllers(now),
        "workers": workers(now),
        "stepsRunning": steps_running(),
        "database": database(),
        "broker": broker(),
        "engines": engines(),
        "sealer": sealer(now),
    }


def controllers(now: Any) -> list[dict[str, Any]]:
    rows = LoopBeat.objects.filter(beat_at__gte=now - SHOWN).order_by("loop", "-leader", "host", "pid")
    out = [{"loop": b.loop, "host": b.host, "pid": b.pid, "leader": b.leader, "since": b.since,
            "lastBeatAt": b.beat_at, "lastPassMs": b.last_pass_ms, "passes": b.passes,
            "fresh": now - b.beat_at <= FRESH} for b in rows]
    led = {r["loop"] for r in out if r["leader"] and r["fresh"]}
    # A loop nobody leads is the one thing on this page that means "nothing heals": list it.
    out += [{"loop": loop, "host": "", "pid": None, "leader": False, "since": None, "lastBeatAt": None,
             "lastPassMs": None, "passes": 0, "fresh": False} for loop in loop_periods() if loop not in led
            and not any(r["loop"] == loop for r in out)]
    return out


def workers(now: Any) -> list[dict[str, Any]]:
    """Each worker cluster (queue) on each host: its live worker processes (console/workers.py
    heartbeats), how many run a task, its last heartbeat; the queue depth of each cluster."""
    q = settings.Q_CLUSTER
    depth: dict[str, int] = {}
    if "orm" in q:
        depth = dict(OrmQ.objects.filter(lock__lte=now).values_list("key").annotate(n=Count("id")).order_by())
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for beat in WorkerBeat.objects.filter(beat_at__gte=now - SHOWN):
        g = groups.setdefault((beat.cluster, beat.host), {
            "cluster": beat.cluster, "host": beat.host, "workers": 0, "busy": 0, "tasks": 0,
            "lastBeatAt": beat.beat_at, "fresh": False, "queueDepth": depth.get(beat.cluster)})
        alive = now - beat.beat_at <= FRESH
        g["workers"] += 1 if alive else 0
        g["busy"] += 1 if alive and beat.busy else 0
        g["tasks"] += beat.tasks
        g["lastBeatAt"] = max(g["lastBeatAt"], beat.beat_at)
        g["fresh"] = g["fresh"] or alive
    # A queue with work and no worker is the thing to see first.
    for cluster in sorted({q["name"], settings.HMS_ALERT_CLUSTER} - {c for c, _ in groups}):
        groups[(cluster, "")] = {"cluster": cluster, "host": "", "workers": 0, "busy": 0, "tasks": 0,
                                 "lastBeatAt": None, "fresh": False, "queueDepth": depth.get(cluster)}
    return [groups[k] for k in sorted(groups)]


def steps_running() -> int:
    return StepRun.objects.filter(status=StepRun.Status.RUNNING).count()


def database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        version = ".".join(str(part) for part in connection.get_database_version())
        return {"vendor": connection.vendor, "reachable": True, "version": version}
    except DatabaseError as exc:
        return {"vendor": connection.vendor, "reachable": False, "error": str(exc).splitlines()[0][:200]}


def broker() -> dict[str, Any]:
    name = "orm" if "orm" in settings.Q_CLUSTER else "redis"
    try:
        from django_q.brokers import get_broker  # here: the Redis client is imported only when asked for

        size = get_broker().queue_size()
        return {"name": name, "reachable": True, "queueSize": size}
    except Exception as exc:  # an unreachable broker is an answer here, not an error of the page
        return {"name": name, "reachable": False, "error": str(exc)[:200]}


def engines() -> list[dict[str, Any]]:
    used = dict(Service.objects.values_list("driver").annotate(n=Count("id")).order_by())
    states = {s.engine: s for s in EngineState.objects.all()}
    out = []
    for engine in sorted(set(used) | set(states)):
        st = states.get(engine)
        out.append({"engine": engine, "services": used.get(engine, 0),
                    "breaker": st.state if st else "closed", "failures": st.failures if st else 0,
                    "lastError": st.last_error if st else "", "changedAt": st.changed_at if st else None})
    return out


def sealer(now: Any) -> dict[str, Any]:
    row = AuditEntry.objects.filter(seq__isnull=True).aggregate(n=Count("id"), oldest=Min("created_at"))
    age = (now - row["oldest"]).total_seconds() if row["oldest"] else 0.0
    return {"pending": row["n"], "oldestPendingSeconds": round(max(0.0, age), 3)}
