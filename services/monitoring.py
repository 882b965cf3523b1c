"""Health probes: the controller decides which instances are due, django-q2 workers probe them.

Flow
- The controller runs `Monitor` on a thread of its own (`start_in_background`), so probe cadence
  does not depend on how long a reconcile pass takes. Every 100 ms it picks the running instances
  whose probe is due (in memory: a schedule costs no database writes) and hands them, in batches
  of HMS_PROBE_BATCH_SIZE, to the workers as `probe_batch` tasks.
- A batch probes its instances concurrently (a shared thread pool; plain http.client, because
  `requests` costs several times the CPU per call and probes are the hot path), bulk-inserts the
  raw results and updates per-instance streaks only when they change.
- An instance reaching its service's failure threshold is handed to
  `actions.fail_over_unhealthy` (marked exited, audited with the probe evidence, stopped); the
  reconciler then starts a replacement because live < desired.
- Raw results are kept HMS_PROBE_RAW_MINUTES and rolled up per minute (`rollup_recent`); the SLA
  and the pages read the roll-ups, so storage is bounded whatever the fleet size.
- If the task queue is backed up (workers busy with long workflow steps), the controller probes
  the batch itself rather than let detection wait behind them.
"""

from __future__ import annotations

import bisect
import logging
import math
import socket
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import OperationalError, close_old_connections, connection
from django.db.models import F
from django.utils import timezone

from services import actions
from services.models import (
    LATENCY_BUCKETS_MS,
    AlertDelivery,
    AutoscaleDecision,
    Instance,
    MaintenanceWindow,
    ProbeResult,
    ProbeRollup,
    Service,
)

log = logging.getLogger("hmsmgmt.monitoring")


def knob(name: str, default: float) -> float:
    """Monitoring knobs come from settings (env-driven there); defaults keep the module usable alone."""
    return getattr(settings, name, default)


# --- probing one endpoint ------------------------------------------------------------------------
@dataclass
class Probe:
    ok: bool
    latency_ms: float
    status: int | None = None
    error: str = ""


def probe_http(host: str, port: int, path: str, timeout: float) -> Probe:
    """GET host:port/path; 2xx within the timeout is up. Never raises.

    A bare HTTP/1.0 exchange on a socket, reading only the status line: http.client parses every
    header through the email package, which made it most of the CPU a probe costs."""
    started = time.perf_counter()
    deadline = started + timeout

    def elapsed() -> float:
        return (time.perf_counter() - started) * 1000

    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: hmsmgmt-probe/1\r\n\r\n"
                         .encode())
            head = b""
            while b"\r\n" not in head and len(head) < 1024:
                sock.settimeout(max(0.001, deadline - time.perf_counter()))
                chunk = sock.recv(1024)
                if not chunk:
                    break
                head += chunk
        ms = elapsed()
    except TimeoutError:
        return Probe(False, elapsed(), None, f"timeout after {timeout:g}s")
    except OSError as exc:
        return Probe(False, elapsed(), None, (exc.strerror or str(exc))[:200])
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return Probe(False, ms, None, f"bad response: {head[:60]!r}"[:200])
    status = int(parts[1])
    return Probe(200 <= status < 300, ms, status, "" if 200 <= status < 300 else f"HTTP {status}")


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def pool() -> ThreadPoolExecutor:
    # One pool per process, reused by every batch: starting threads per batch costs more CPU than
    # the probes themselves at a 1-5 s cadence.
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=int(knob("HMS_PROBE_THREADS", 32)), thread_name_prefix="probe")
        return _pool


# --- the worker task -----------------------------------------------------------------------------
def in_maintenance(service_ids: Iterable[int], at: datetime | None = None) -> set[int]:
    at = at or timezone.now()
    return set(
        MaintenanceWindow.objects.filter(service_id__in=list(service_ids), starts_at__lte=at, ends_at__gt=at)
        .values_list("service_id", flat=True)
    )


def probe_batch(instance_ids: list[int]) -> int:
    """django-q2 task: probe these instances concurrently, store results, act on thresholds.
    Takes ids and re-fetches (an instance stopped since the fan-out is skipped); running it twice
    only adds observations, and fail-over is idempotent."""
    insts = list(Instance.objects.filter(pk__in=instance_ids, state=Instance.State.RUNNING)
                 .exclude(port=None).select_related("service"))
    if not insts:
        return 0
    results = list(pool().map(
        lambda i: probe_http(i.host, i.port, i.service.health_path, i.service.probe_timeout_seconds), insts))
    now = timezone.now()
    maint = in_maintenance({i.service_id for i in insts}, now)
    store_results([(i.service_id, i.pk, r, i.service_id in maint) for i, r in zip(insts, results, strict=True)], now)
    for inst, res in zip(insts, results, strict=True):
        account(inst, res, now, paused=inst.service_id in maint)
    return len(insts)


def store_results(rows: list[tuple[int, int, Probe, bool]], at: datetime) -> None:
    """One multi-row INSERT: model instances and RETURNING ids cost more CPU than the probes."""
    table = ProbeResult._meta.db_table
    cols = "service_id, instance_id, at, ok, latency_ms, status_code, error, in_maintenance"
    params: list[object] = []
    at_db = connection.ops.adapt_datetimefield_value(at)  # e.g. SQLite stores naive UTC text
    for svc_id, inst_id, r, maint in sorted(rows, key=lambda row: row[1]):  # one lock order for all
        params += [svc_id, inst_id, at_db, r.ok, round(r.latency_ms, 2), r.status, r.error, maint]
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    with connection.cursor() as cursor:
        try:
            cursor.execute(f"INSERT INTO {table} ({cols}) VALUES {values}", params)
        except OperationalError:
            # PostgreSQL may pick this INSERT (it key-share locks the instance rows) as the victim
            # of a deadlock with a bulk update of instances; the observations are worth one retry.
            cursor.execute(f"INSERT INTO {table} ({cols}) VALUES {values}", params)


def account(inst: Instance, res: Probe, now: datetime, *, paused: bool = False) -> bool:
    """Update the instance's streaks; returns True when it was failed over."""
    svc = inst.service
    if res.ok:
        healthy = inst.health == Instance.Health.UP and inst.probe_failures == 0
        if healthy and inst.probe_successes >= svc.success_threshold:
            return False  # steady state: no write at all
        successes = inst.probe_successes + 1
        fields = {"probe_failures": 0, "probe_successes": F("probe_successes") + 1, "last_probe_at": now,
                  "last_probe_ms": res.latency_ms}
        if successes >= svc.success_threshold:
            fields["health"] = Instance.Health.UP
        Instance.objects.filter(pk=inst.pk, state=Instance.State.RUNNING).update(**fields)
        return False
    # A failure: count atomically (two batches may probe the same instance if the queue lagged).
    Instance.objects.filter(pk=inst.pk, state=Instance.State.RUNNING).update(
        probe_failures=F("probe_failures") + 1, probe_successes=0, health=Instance.Health.DOWN,
        last_probe_at=now, last_probe_ms=res.latency_ms)
    failures = Instance.objects.filter(pk=inst.pk).values_list("probe_failures", flat=True).first() or 0
    if failures < svc.failure_threshold or paused:
        return False
    recent = list(ProbeResult.objects.filter(instance_id=inst.pk).order_by("-at")[: max(failures, 3)]
                  .values("at", "ok", "status_code", "error", "latency_ms"))
    first_fail = next((p["at"] for p in reversed(recent) if not p["ok"]), now)
    evidence = {
        "consecutive_failures": failures,
        "threshold": svc.failure_threshold,
        "interval_seconds": svc.probe_interval_seconds,
        "timeout_seconds": svc.probe_timeout_seconds,
        "health_url": f"http://{inst.host}:{inst.port}{svc.health_path}",
        "first_failure_at": first_fail.isoformat(),
        "detected_after_seconds": round((now - first_fail).total_seconds(), 2),
        "probes": [{"at": p["at"].isoformat(), "ok": p["ok"], "status": p["status_code"], "error": p["error"],
                    "ms": p["latency_ms"]} for p in recent],
    }
    return actions.fail_over_unhealthy(inst, evidence=evidence, component="monitor")


# --- the controller side: schedule and fan out -----------------------------------------------------
class Scheduler:
    """Which running instances are due. In memory: a restarted controller simply probes
    everything once straight away."""

    def __init__(self, refresh_seconds: float = 1.0) -> None:
        self.next_due: dict[int, float] = {}
        self.refresh_seconds = refresh_seconds
        self.loaded_at = -1e9
        self.running: list[tuple[int, int]] = []
        self.intervals: dict[int, float] = {}

    def due(self, now: float) -> list[int]:
        # The fleet is re-read once a second, not on every 100 ms pass: at 500 instances the
        # re-read was most of the controller's probing cost. A new instance waits ≤ 1 s.
        if now - self.loaded_at >= self.refresh_seconds:
            self.intervals = dict(Service.objects.values_list("id", "probe_interval_seconds"))
            self.running = list(Instance.objects.filter(state=Instance.State.RUNNING).exclude(port=None)
                                .values_list("id", "service_id"))
            self.loaded_at = now
        intervals = self.intervals
        out: list[int] = []
        seen: set[int] = set()
        for inst_id, svc_id in self.running:
            seen.add(inst_id)
            due_at = self.next_due.get(inst_id, 0.0)
            if due_at > now:
                continue
            interval = max(1.0, intervals.get(svc_id, 5.0))
            # Keep the cadence (no drift from tick granularity) unless we fell behind.
            self.next_due[inst_id] = due_at + interval if due_at + interval > now else now + interval
            out.append(inst_id)
        for gone in set(self.next_due) - seen:
            del self.next_due[gone]
        return out


def dispatch(batches: list[list[int]], *, inline: bool) -> None:
    if inline:
        for batch in batches:
            _inline_batch(batch)
        return
    from django_q.tasks import async_task

    for batch in batches:
        # save=False: a result row per batch would be pure noise in django-q's task table.
        async_task("services.monitoring.probe_batch", batch, group="probes", save=False)


def _inline_batch(batch: list[int]) -> None:
    def run() -> None:
        try:
            probe_batch(batch)
        except Exception:
            log.exception("inline probe batch failed")
        finally:
            connection.close()  # this thread's own connection; the thread ends here

    threading.Thread(target=run, name="probe-inline", daemon=True).start()


def chunks(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


# --- roll-ups and retention ------------------------------------------------------------------------
def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[k]


def bucket_of(ms: float) -> int:
    return bisect.bisect_left(LATENCY_BUCKETS_MS, ms)


def hist_percentile(hist: list[int], q: float) -> float | None:
    """Percentile from merged histogram counts: the upper bound of the bucket holding it."""
    total = sum(hist)
    if not total:
        return None
    rank = math.ceil(q * total)
    seen = 0
    for i, count in enumerate(hist):
        seen += count
        if seen >= rank:
            return float(LATENCY_BUCKETS_MS[i]) if i < len(LATENCY_BUCKETS_MS) else float("inf")
    return None


def minute_floor(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def rollup_recent(now: datetime | None = None, minutes: int = 2) -> int:
    """Recompute the roll-ups of the last `minutes` minutes (the current one included, so pages
    and the SLA see fresh data) from the raw results."""
    now = now or timezone.now()
    start = minute_floor(now) - timedelta(minutes=minutes - 1)
    objectives = dict(Service.objects.values_list("id", "latency_objective_ms"))
    groups: dict[tuple[int, datetime], list[tuple[bool, float, bool]]] = {}
    rows = ProbeResult.objects.filter(at__gte=start).values_list("service_id", "at", "ok", "latency_ms",
                                                                 "in_maintenance")
    for svc_id, at, ok, ms, maint in rows.iterator(chunk_size=5000):
        groups.setdefault((svc_id, minute_floor(at)), []).append((ok, ms, maint))
    for (svc_id, minute), samples in groups.items():
        counted = [s for s in samples if not s[2]]
        hist = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        latencies = sorted(ms for ok, ms, _ in counted if ok)
        for ms in latencies:
            hist[bucket_of(ms)] += 1
        objective = objectives.get(svc_id, 300)
        ProbeRollup.objects.update_or_create(
            service_id=svc_id, minute=minute,
            defaults={
                "total": len(counted),
                "up": sum(1 for ok, _, _ in counted if ok),
                "down": sum(1 for ok, _, _ in counted if not ok),
                "slow": sum(1 for ms in latencies if ms > objective),
                "excluded": len(samples) - len(counted),
                "hist": hist,
                "p50_ms": percentile(latencies, 0.50),
                "p95_ms": percentile(latencies, 0.95),
                "max_ms": latencies[-1] if latencies else None,
            },
        )
    return len(groups)


def prune(now: datetime | None = None) -> dict[str, int]:
    """Bounded storage: raw results for HMS_PROBE_RAW_MINUTES, roll-ups for 92 days (the 90-day
    bars), autoscaler decisions for HMS_AUTOSCALE_KEEP_DAYS, finished alert deliveries 30 days."""
    now = now or timezone.now()
    raw = ProbeResult.objects.filter(at__lt=now - timedelta(minutes=knob("HMS_PROBE_RAW_MINUTES", 120))).delete()[0]
    roll = ProbeRollup.objects.filter(minute__lt=now - timedelta(days=92)).delete()[0]
    dec = AutoscaleDecision.objects.filter(at__lt=now - timedelta(days=knob("HMS_AUTOSCALE_KEEP_DAYS", 7))).delete()[0]
    dlv = AlertDelivery.objects.filter(created_at__lt=now - timedelta(days=30)).exclude(
        status=AlertDelivery.Status.PENDING).delete()[0]
    return {"raw": raw, "rollups": roll, "decisions": dec, "deliveries": dlv}


# --- the controller's monitoring loop ---------------------------------------------------------------
class Monitor:
    """One pass = fan out due probes; on their own periods: roll up + evaluate SLAs, run the
    autoscaler, prune. Each part fails alone (logged) so one bad service cannot stop probing."""

    def __init__(self) -> None:
        self.scheduler = Scheduler()
        self.last: dict[str, float] = {}
        self.backlog_checked = 0.0
        self.backlogged = False
        self.rolled_minute: datetime | None = None

    def every(self, name: str, seconds: float, now: float) -> bool:
        if now - self.last.get(name, 0.0) >= seconds:
            self.last[name] = now
            return True
        return False

    def step(self) -> None:
        from services import autoscale, sla

        now = time.monotonic()
        try:
            due = self.scheduler.due(now)
            if due:
                inline = bool(knob("HMS_PROBES_INLINE", False)) or self.queue_backed_up(now)
                dispatch(chunks(due, int(knob("HMS_PROBE_BATCH_SIZE", 50))), inline=inline)
        except Exception:
            log.exception("probe fan-out failed")
        if self.every("sla", knob("HMS_SLA_EVAL_SECONDS", 5), now):
            try:
                # Re-roll the current minute; the previous one once more when a minute closes
                # (its last probes may have landed after the previous pass).
                minute = minute_floor(timezone.now())
                rollup_recent(minutes=1 if minute == self.rolled_minute else 2)
                self.rolled_minute = minute
                sla.evaluate_all()
            except Exception:
                log.exception("SLA evaluation failed")
        if self.every("autoscale", knob("HMS_AUTOSCALE_PERIOD_SECONDS", 15), now):
            try:
                autoscale.evaluate_all()
            except Exception:
                log.exception("autoscaler failed")
        if self.every("prune", 300, now):
            try:
                prune()
            except Exception:
                log.exception("prune failed")

    def queue_backed_up(self, now: float) -> bool:
        # Checked once a second: the count is a query, the fan-out runs ten times a second.
        if now - self.backlog_checked >= 1.0:
            self.backlog_checked = now
            try:
                from django_q.brokers import get_broker

                size = get_broker().queue_size()
            except Exception:
                size = 0
            backed_up = size > int(knob("HMS_PROBE_MAX_BACKLOG", 20))
            if backed_up != self.backlogged:
                log.warning("task queue %s (%d queued): probing %s", "backed up" if backed_up else "drained",
                            size, "in the controller" if backed_up else "on the workers")
            self.backlogged = backed_up
        return self.backlogged


def start_in_background(stop: threading.Event | None = None, period: float = 0.1) -> threading.Thread:
    """Run the Monitor on a daemon thread of the controller process."""
    stop = stop or threading.Event()

    def loop() -> None:
        monitor = Monitor()
        while not stop.is_set():
            started = time.monotonic()
            try:
                close_old_connections()
                monitor.step()
            except Exception:
                log.exception("monitor step failed")
            stop.wait(max(0.0, period - (time.monotonic() - started)))

    thread = threading.Thread(target=loop, name="monitor", daemon=True)
    thread.start()
    return thread
