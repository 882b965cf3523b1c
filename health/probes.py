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

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import OperationalError, connection
from django.db.models import F
from django.utils import timezone
from django_q.tasks import async_task

from fleet.models import Instance
from health import actions
from health.models import ProbeResult, ProbeSettings
from health.selectors import in_maintenance

log = logging.getLogger(__name__)


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
            _pool = ThreadPoolExecutor(max_workers=settings.HMS_PROBE_THREADS, thread_name_prefix="probe")
        return _pool


# --- the worker task -----------------------------------------------------------------------------
def probe_batch(instance_ids: list[int]) -> int:
    """django-q2 task: probe these instances concurrently, store results, act on thresholds.
    Takes ids and re-fetches (an instance stopped since the fan-out is skipped); running it twice
    only adds observations, and fail-over is idempotent."""
    insts = list(Instance.objects.filter(pk__in=instance_ids, state=Instance.State.RUNNING)
                 .exclude(port=None).select_related("service__probe_settings"))
    if not insts:
        return 0
    results = list(pool().map(
        lambda i: probe_http(i.host, i.port, i.service.health_path, i.service.probe_settings.probe_timeout_seconds),
        insts))
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
        if healthy and inst.probe_successes >= svc.probe_settings.success_threshold:
            return False  # steady state: no write at all
        successes = inst.probe_successes + 1
        fields = {"probe_failures": 0, "probe_successes": F("probe_successes") + 1, "last_probe_at": now,
                  "last_probe_ms": res.latency_ms}
        if successes >= svc.probe_settings.success_threshold:
            fields["health"] = Instance.Health.UP
        Instance.objects.filter(pk=inst.pk, state=Instance.State.RUNNING).update(**fields)
        return False
    # A failure: count atomically (two batches may probe the same instance if the queue lagged).
    Instance.objects.filter(pk=inst.pk, state=Instance.State.RUNNING).update(
        probe_failures=F("probe_failures") + 1, probe_successes=0, health=Instance.Health.DOWN,
        last_probe_at=now, last_probe_ms=res.latency_ms)
    failures = Instance.objects.filter(pk=inst.pk).values_list("probe_failures", flat=True).first() or 0
    if failures < svc.probe_settings.failure_threshold or paused:
        return False
    recent = list(ProbeResult.objects.filter(instance_id=inst.pk).order_by("-at")[: max(failures, 3)]
                  .values("at", "ok", "status_code", "error", "latency_ms"))
    first_fail = next((p["at"] for p in reversed(recent) if not p["ok"]), now)
    evidence = {
        "consecutive_failures": failures,
        "threshold": svc.probe_settings.failure_threshold,
        "interval_seconds": svc.probe_settings.probe_interval_seconds,
        "timeout_seconds": svc.probe_settings.probe_timeout_seconds,
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
            self.intervals = dict(ProbeSettings.objects.values_list("service_id", "probe_interval_seconds"))
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
    for batch in batches:
        # save=False: a result row per batch would be pure noise in django-q's task table.
        async_task("health.probes.probe_batch", batch, group="probes", save=False)


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


# --- the controller's jobs (registered in health/apps.py) -------------------------------------------
class FanOut:
    """Every pass: hand the due probes to the workers (or probe inline when the queue is backed
    up, so detection never waits behind long workflow steps)."""

    def __init__(self) -> None:
        self.scheduler = Scheduler()
        self.backlog_checked = 0.0
        self.backlogged = False

    def __call__(self) -> None:
        now = time.monotonic()
        due = self.scheduler.due(now)
        if due:
            inline = settings.HMS_PROBES_INLINE or self.queue_backed_up(now)
            dispatch(chunks(due, settings.HMS_PROBE_BATCH_SIZE), inline=inline)

    def queue_backed_up(self, now: float) -> bool:
        # Checked once a second: the count is a query, the fan-out runs ten times a second.
        if now - self.backlog_checked >= 1.0:
            self.backlog_checked = now
            try:
                from django_q.brokers import get_broker

                size = get_broker().queue_size()
            except Exception:
                size = 0
            backed_up = size > settings.HMS_PROBE_MAX_BACKLOG
            if backed_up != self.backlogged:
                log.warning("task queue %s (%d queued): probing %s", "backed up" if backed_up else "drained",
                            size, "in the controller" if backed_up else "on the workers")
            self.backlogged = backed_up
        return self.backlogged
