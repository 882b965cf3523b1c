"""The probe loop: every running instance probed on its own cadence, in a process of its own.

Where it runs: the "probes" loop of core.loops, which `manage.py controller --loops probes` runs
alone (`manage.py up` starts it as a process of its own next to web, worker and the controller,
which then runs every other loop). A process of its own because the reconcile pass (1.5 s at 100
services) and the monitor jobs (roll-ups, SLOs, autoscaler) are CPU-bound Python: in the same
process they hold the GIL for long stretches and a probe due meanwhile waits. Alone, the probe
process does nothing but probe and store. (`manage.py controller` with no `--loops` still runs
every loop, this one included, so a one-process console probes too; each loop is led by one
controller process at a time, controller/leader.py, so no layout probes twice.)

Why asyncio: a probe is a connect, a write and a read of one line, i.e. waiting. One event loop
thread keeps hundreds of them in flight at a fraction of a millisecond of CPU each, where the
django-q2 path it replaces (fan-out, task queue, a worker's thread pool, per-batch re-reads, the
qcluster's processes) paid for a queue round trip per batch and shared the monitor's thread.
Measured on the 2-core bench machine at 300 probes/s (bench/bench_probes.py): the whole probe
process, storing and accounting included, 0.44 ms CPU per probe (13 % of a core; 77 MB RSS, flat);
probing alone ~0.27 ms. A bare asyncio.Protocol instead of streams saved ~15 % of the probing
alone in a micro-benchmark; not worth its extra code. Threads (one per probe in flight) cost a
stack each and GIL hand-offs; the event loop needs neither.

Three threads, none waiting on another's slow call:
- "probes-io" runs the asyncio loop. Each instance is scheduled with `loop.call_at` on its own grid
  (`first_due`, `next_due`: pure, so the cadence has no drift and a stall skips the missed slots
  rather than bunching them), started on 50 ms slots (`fire_at`: one wake-up for all the probes
  due in a slot, less than half the CPU of one per probe); a probe's outcome goes on a queue. It
  never touches the database.
- the loop's own thread (the job below, every HMS_PROBE_FLUSH_MS) re-reads the fleet once a second
  (a new instance is probed within ~1 s, a stopped one no more), drains the queue, stores the
  outcomes in one INSERT and updates streaks (`probes.account`, a write only when one changes).
- "probe-failover" carries out fail-overs (`probes.fail_over`: evidence, the audited transaction,
  the engine's stop), so a slow engine delays neither storing nor probing.
A restarted probe process simply probes everything within its first second: the schedule is
memory only and costs no database writes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.utils import timezone

from core.numbers import finite_or
from fleet.models import Instance
from health import probes
from health.selectors import in_maintenance

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0  # how often the fleet is re-read: a new instance waits for at most this long
SPREAD_SECONDS = 1.0  # first probes are spread over this much (or the interval, if shorter)
SLOT_SECONDS = 0.05  # probes fire on this grid: one wake-up starts every probe due in the slot
GOLDEN = (math.sqrt(5) - 1) / 2
PROBE_FIELDS = ("probe_interval_seconds", "probe_timeout_seconds", "failure_threshold", "success_threshold")


# --- the schedule (pure) ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Target:
    instance_id: int
    service_id: int
    host: str
    port: int
    path: str
    interval: float
    timeout: float


def first_due(instance_id: int, interval: float, now: float) -> float:
    """An instance new to the schedule is probed within its first SPREAD_SECONDS, at an offset its
    id decides (golden-ratio spacing), so a fleet read at start does not probe in one burst and
    then keep that burst every interval."""
    return now + ((instance_id * GOLDEN) % 1.0) * min(interval, SPREAD_SECONDS)


def fire_at(due: float) -> float:
    """When a probe due at `due` is started: at the end of its SLOT_SECONDS slot. Waking the event
    loop once per probe, spread over the second, cost 2-2.5x the CPU per probe of waking it once
    for all the probes of a slot (measured at 300 probes/s: ~0.6-0.7 ms against ~0.28 ms); 50 ms
    late at most, and only the start: the grid itself (`due`) stays exact, so nothing drifts."""
    return math.ceil(due / SLOT_SECONDS) * SLOT_SECONDS


def next_due(due: float, interval: float, now: float) -> float:
    """The next slot on the instance's grid (due + k × interval) after `now`: a probe late by
    some milliseconds keeps the cadence, and a stalled loop skips the slots it missed rather than
    probing several times at once."""
    nxt = due + interval
    if nxt <= now:
        nxt += math.floor((now - nxt) / interval + 1) * interval
    return nxt


def timing(interval: object, timeout: object) -> tuple[float, float]:
    """A service's (interval, timeout) as the schedule uses them: a value that is not a finite
    number in range (a row written around the validators) falls back to the default, so one bad
    setting cannot break the event loop's timers (NaN cannot be ordered in its heap, an infinite
    interval makes math.ceil raise) and with them every other instance's probes."""
    every = max(1.0, finite_or(interval, 5.0, high=86400.0))
    return every, finite_or(timeout, 1.0, low=0.001, high=86400.0)


# --- probing: the asyncio thread -----------------------------------------------------------------
Outcome = tuple[Target, probes.Probe, datetime]


class ProbeIO:
    """The event loop thread: probes each target on its grid and puts the outcomes on `out`."""

    def __init__(self, out: queue.SimpleQueue[Outcome], *, concurrency: int) -> None:
        self.out = out
        self.loop = asyncio.new_event_loop()
        self.targets: dict[int, Target] = {}
        self.scheduled: set[int] = set()  # instance ids with a call_at pending
        self.tasks: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones
        self.limit = asyncio.Semaphore(concurrency)  # bounds open sockets, whatever the fleet size
        self.thread = threading.Thread(target=self.loop.run_forever, name="probes-io", daemon=True)
        self.thread.start()

    def set_targets(self, targets: dict[int, Target]) -> None:
        """From any thread: probe these from now on (and stop probing the others)."""
        self.loop.call_soon_threadsafe(self._set_targets, targets)

    def close(self) -> None:
        async def cancel() -> None:
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

        if self.loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(cancel(), self.loop).result(timeout=5)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()

    # On the loop's thread from here on.
    def _set_targets(self, targets: dict[int, Target]) -> None:
        self.targets = targets  # a target gone is dropped at its next due time (see _fire)
        now = self.loop.time()
        for inst_id, target in targets.items():
            if inst_id not in self.scheduled:
                self.scheduled.add(inst_id)
                due = first_due(inst_id, target.interval, now)
                self.loop.call_at(fire_at(due), self._fire, inst_id, due)

    def _fire(self, inst_id: int, due: float) -> None:
        target = self.targets.get(inst_id)
        if target is None:
            self.scheduled.discard(inst_id)
            return
        nxt = next_due(due, target.interval, self.loop.time())
        self.loop.call_at(fire_at(nxt), self._fire, inst_id, nxt)
        # Even if its previous probe is still waiting (a timeout as long as the interval): skipping
        # would halve the cadence of exactly the instance that hangs. The streaks count atomically.
        task = self.loop.create_task(self._probe(target))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _probe(self, target: Target) -> None:
        at = timezone.now()  # when it was due, give or take a slot: the cadence stored
        async with self.limit:
            res = await probes.probe(target.host, target.port, target.path, target.timeout)
        self.out.put((target, res, at))


# --- the job: fleet, storage, streaks ----------------------------------------------------------------
class Prober:
    """The "probes" job (registered in health/apps.py). Built once per loop run: starts the event
    loop and the fail-over thread; each call stores what was probed since the last one."""

    def __init__(self) -> None:
        self.outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self.io = ProbeIO(self.outcomes, concurrency=settings.HMS_PROBE_CONCURRENCY)
        self.streaks: dict[int, probes.Streak] = {}
        self.loaded_at = -math.inf
        self.failovers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe-failover")
        self.failing_over: set[int] = set()  # handed to the fail-over thread (until the fleet drops it)
        self.lock = threading.Lock()  # guards failing_over (the fail-over thread discards from it)

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.loaded_at >= REFRESH_SECONDS:
            self.loaded_at = now
            self.refresh()
        batch: list[Outcome] = []
        try:
            while True:
                batch.append(self.outcomes.get_nowait())
        except queue.Empty:
            pass
        if batch:
            self.record(batch)

    def refresh(self) -> None:
        # Tuples, not models: building three models per instance every second was most of this
        # thread's CPU at 300 instances (17 ms a second).
        rows = (Instance.objects.filter(state=Instance.State.RUNNING).exclude(port=None)
                .exclude(service__probe_settings=None)
                .values_list("pk", "service_id", "host", "port", "service__health_path", "health", "probe_failures",
                             "probe_successes", *(f"service__probe_settings__{f}" for f in PROBE_FIELDS)))
        targets: dict[int, Target] = {}
        streaks: dict[int, probes.Streak] = {}
        for pk, svc_id, host, port, path, health, failures, successes, interval, timeout, fail_at, up_at in rows:
            targets[pk] = Target(pk, svc_id, host, port, path, *timing(interval, timeout))
            streaks[pk] = probes.Streak(pk, health, failures, successes, fail_at, up_at)
        self.streaks = streaks
        with self.lock:  # an instance failed over is no longer running: forget it
            self.failing_over &= streaks.keys()
        self.io.set_targets(targets)

    def record(self, batch: list[Outcome]) -> None:
        now = timezone.now()
        maint = in_maintenance({t.service_id for t, _r, _at in batch}, now)
        probes.store_results([(t.service_id, t.instance_id, r, t.service_id in maint, at) for t, r, at in batch])
        for target, res, _at in batch:
            streak = self.streaks.get(target.instance_id)
            if streak is None:
                continue  # no longer running: stored as observed, nothing to account
            with self.lock:
                if streak.instance_id in self.failing_over:
                    continue  # its fail-over is under way
            if probes.account(streak, res, now, paused=target.service_id in maint):
                with self.lock:
                    self.failing_over.add(streak.instance_id)
                self.failovers.submit(self._fail_over, streak.instance_id)

    def _fail_over(self, instance_id: int) -> None:
        done = False
        try:
            done = probes.fail_over(instance_id, timezone.now())
        except Exception:
            log.exception("fail-over of instance %s failed", instance_id)
        finally:
            if not done:  # not failed over (maintenance began, or an error): the next failure retries
                with self.lock:
                    self.failing_over.discard(instance_id)
            connection.close()  # this thread's own connection; fail-overs are rare

    def close(self) -> None:
        """Called when the loop stops: probing ends, fail-overs under way finish."""
        self.io.close()
        self.failovers.shutdown(wait=True)
