"""Health probes, one endpoint at a time: probing (asyncio, a bare HTTP/1.0 GET), storing results
and accounting streaks up to the fail-over decision. The loop that schedules them is
`health.prober`; this module holds no schedule and no thread.

- `probe()` opens a connection, sends a bare HTTP/1.0 GET and reads the status line only: every
  byte parsed beyond it (headers, body) is CPU that tells the probe nothing.
- `store_results()` writes a pass's results as one multi-row INSERT.
- `account()` updates an instance's streaks, writing only when they change, and says whether it
  reached its service's failure threshold; `fail_over()` then gathers the probe evidence and hands
  the instance to `actions.fail_over_unhealthy` (marked exited, audited, stopped); the reconciler
  starts a replacement because live < desired.
- Raw results are kept HMS_PROBE_RAW_MINUTES and rolled up per minute (`health.rollups`); the SLA
  and the pages read the roll-ups, so storage is bounded whatever the fleet size.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, OperationalError, connection
from django.db.models import F

from fleet.models import Instance
from health import actions
from health.models import ProbeResult


# --- probing one endpoint ------------------------------------------------------------------------
@dataclass(slots=True)
class Probe:
    ok: bool
    latency_ms: float
    status: int | None = None
    error: str = ""


def parse_status(head: bytes, latency_ms: float) -> Probe:
    """The outcome a response's first bytes give: 2xx is up, anything else (or no HTTP) is down."""
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return Probe(False, latency_ms, None, f"bad response: {head[:60]!r}"[:200])
    status = int(parts[1])
    return Probe(200 <= status < 300, latency_ms, status, "" if 200 <= status < 300 else f"HTTP {status}")


async def probe(host: str, port: int, path: str, timeout: float) -> Probe:
    """GET host:port/path; 2xx within the timeout is up. Never raises (but for cancellation).

    HTTP/1.0 so the server closes after one answer, and only the status line is read: the whole
    exchange is one connect, one write and one read."""
    started = time.perf_counter()

    def elapsed() -> float:
        return (time.perf_counter() - started) * 1000

    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=1024)
            try:
                writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: hmsmgmt-probe/1\r\n\r\n"
                             .encode())
                try:
                    head = await reader.readuntil(b"\r\n")
                except asyncio.IncompleteReadError as exc:
                    head = exc.partial  # closed before a full line: parse_status says "bad response"
                except asyncio.LimitOverrunError:
                    head = b""  # no line end within the limit: no HTTP status line either
            finally:
                writer.close()
    except TimeoutError:
        return Probe(False, elapsed(), None, f"timeout after {timeout:g}s")
    except OSError as exc:
        return Probe(False, elapsed(), None, (exc.strerror or str(exc))[:200])
    return parse_status(head, elapsed())


# --- storing and accounting ------------------------------------------------------------------------
Row = tuple[int, int, Probe, bool, datetime]  # service id, instance id, outcome, in maintenance, probed at


def store_results(rows: list[Row]) -> None:
    """One multi-row INSERT: model instances and RETURNING ids cost more CPU than the probes."""
    if not rows:
        return
    table = ProbeResult._meta.db_table
    cols = "service_id, instance_id, at, ok, latency_ms, status_code, error, in_maintenance"
    adapt = connection.ops.adapt_datetimefield_value  # e.g. SQLite stores naive UTC text

    def insert(batch: list[Row]) -> None:
        params: list[object] = []
        for svc_id, inst_id, r, maint, at in sorted(batch, key=lambda row: row[1]):  # one lock order for all
            params += [svc_id, inst_id, adapt(at), r.ok, round(r.latency_ms, 2), r.status, r.error, maint]
        values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(batch))
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} ({cols}) VALUES {values}", params)

    try:
        insert(rows)
    except OperationalError:
        # PostgreSQL may pick this INSERT (it key-share locks the instance rows) as the victim of a
        # deadlock with a bulk update of instances; the observations are worth one retry.
        insert(rows)
    except IntegrityError:
        # An instance (its service) was deleted between the probe and this write: keep the others.
        live = set(Instance.objects.filter(pk__in={r[1] for r in rows}).values_list("pk", flat=True))
        if kept := [r for r in rows if r[1] in live]:
            insert(kept)


@dataclass(slots=True)
class Streak:
    """An instance's probe streaks as the probe loop keeps them between writes (re-read from its row
    every second), with its service's thresholds."""

    instance_id: int
    health: str
    failures: int
    successes: int
    failure_threshold: int
    success_threshold: int


def account(streak: Streak, res: Probe, now: datetime, *, paused: bool = False) -> bool:
    """Update the instance's streaks (in its row and in `streak`, so a steady state writes nothing);
    True when it reached its failure threshold outside maintenance: time to `fail_over()`."""
    running = Instance.objects.filter(pk=streak.instance_id, state=Instance.State.RUNNING)
    if res.ok:
        steady = streak.health == Instance.Health.UP and streak.failures == 0
        if steady and streak.successes >= streak.success_threshold:
            return False  # steady state: no write at all
        fields: dict[str, object] = {"probe_failures": 0, "probe_successes": F("probe_successes") + 1,
                                     "last_probe_at": now, "last_probe_ms": res.latency_ms}
        streak.failures, streak.successes = 0, streak.successes + 1
        if streak.successes >= streak.success_threshold:
            fields["health"] = streak.health = Instance.Health.UP
        running.update(**fields)
        return False
    # A failure: counted in the row (atomically) and read back, so the threshold is the row's.
    running.update(probe_failures=F("probe_failures") + 1, probe_successes=0, health=Instance.Health.DOWN,
                   last_probe_at=now, last_probe_ms=res.latency_ms)
    failures = Instance.objects.filter(pk=streak.instance_id).values_list("probe_failures", flat=True).first() or 0
    streak.failures, streak.successes, streak.health = failures, 0, Instance.Health.DOWN
    return failures >= streak.failure_threshold and not paused


def fail_over(instance_id: int, now: datetime) -> bool:
    """Fail over an instance `account()` found at its threshold, with the probes as evidence.
    Safe to call twice (the second call finds it no longer live)."""
    inst = Instance.objects.select_related("service__probe_settings").get(pk=instance_id)
    ps = inst.service.probe_settings
    failures = inst.probe_failures
    recent = list(ProbeResult.objects.filter(instance_id=inst.pk).order_by("-at")[: max(failures, 3)]
                  .values("at", "ok", "status_code", "error", "latency_ms"))
    first_fail = next((p["at"] for p in reversed(recent) if not p["ok"]), now)
    evidence = {
        "consecutive_failures": failures,
        "threshold": ps.failure_threshold,
        "interval_seconds": ps.probe_interval_seconds,
        "timeout_seconds": ps.probe_timeout_seconds,
        "health_url": f"http://{inst.host}:{inst.port}{inst.service.health_path}",
        "first_failure_at": first_fail.isoformat(),
        "detected_after_seconds": round((now - first_fail).total_seconds(), 2),
        "probes": [{"at": p["at"].isoformat(), "ok": p["ok"], "status": p["status_code"], "error": p["error"],
                    "ms": p["latency_ms"]} for p in recent],
    }
    return actions.fail_over_unhealthy(inst, evidence=evidence, component="monitor")
