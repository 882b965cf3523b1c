"""Periodic jobs and the one loop style that runs them.

Each app registers its jobs in its AppConfig.ready() (`register(...)`); the controller process
runs one `Loop` thread per loop name and nothing else. A loop runs its due jobs in registration
order (so apps lower in INSTALLED_APPS run first: health rolls up before slo evaluates), each job
failing alone (logged), and waits on its stop event, so a stop is never a cut-off mid-query.

Loops (the controller starts the ones that have jobs):
- "tick"     every HMS_CONTROLLER_TICK_MS: reconcile every service, sweep workflow leases;
- "monitor"  every 100 ms: roll-ups, SLO evaluation, the autoscaler, pruning;
- "sealer"   every HMS_AUDIT_SEAL_INTERVAL_MS: seal the audit chain, write due checkpoints;
- "failover" continuously: converge services whose engine reported a death (the job blocks ≤ 0.2 s);
- "probes"   every HMS_PROBE_FLUSH_MS: store what the probe loop (health.prober, an asyncio thread
             of its own) probed since the last pass; usually run as a process of its own.
Their own threads keep each cadence independent of the others' slowest pass. A job with a
`close()` (one that started threads of its own) has it called when its loop stops, and when its
loop stands by: a loop given `leads` (the controller's lease, controller.leader) asks it before
each pass and runs none while it does not lead, its jobs closed and built afresh once it leads
again (a standby keeps no probing threads, no state a former leadership left behind).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import close_old_connections, connection

log = logging.getLogger(__name__)

Seconds = float | Callable[[], float]


@dataclass
class Job:
    loop: str
    name: str
    every: Seconds  # seconds between runs (0: every pass); a callable is read each pass (settings)
    make: Callable[[], Callable[[], object]]  # builds the callable once per loop (it may keep state)

    def period(self) -> float:
        return float(self.every() if callable(self.every) else self.every)


_jobs: list[Job] = []
_lock = threading.Lock()


def register(loop: str, name: str, every: Seconds, fn: Callable[[], object] | None = None, *,
             make: Callable[[], Callable[[], object]] | None = None) -> None:
    """Register `fn` (stateless) or `make` (a factory, called once per loop run) under a unique
    name; registering a name again replaces it (ready() may run twice in tests)."""
    if (fn is None) == (make is None):
        raise TypeError("give fn or make")
    job = Job(loop, name, every, make or (lambda: fn))  # type: ignore[arg-type, return-value]
    with _lock:
        _jobs[:] = [j for j in _jobs if j.name != name]
        _jobs.append(job)


def jobs(loop: str | None = None) -> list[Job]:
    with _lock:
        return [j for j in _jobs if loop is None or j.loop == loop]


@dataclass
class Loop:
    """Runs the due jobs of one loop every `period` seconds until `stop` is set."""

    name: str
    period: Seconds
    stop: threading.Event = field(default_factory=threading.Event)
    on_pass: Callable[[float], None] | None = None  # called with each pass's duration (seconds)
    # Asked before each pass: False → no pass (the callable waits its own retry period, so a
    # standby does not spin). None: the loop always runs (tests, one-off passes).
    leads: Callable[[], bool] | None = None

    def __post_init__(self) -> None:
        self._calls: list[tuple[Job, Callable[[], object]]] | None = None  # built on the first pass
        self._last: dict[str, float] = {}
        self.passes = 0

    def run_once(self) -> None:
        close_old_connections()
        if self._calls is None:
            self._calls = [(job, job.make()) for job in jobs(self.name)]
        now = time.monotonic()
        for job, call in self._calls:
            every = job.period()
            if every and now - self._last.get(job.name, -1e18) < every:
                continue
            self._last[job.name] = now
            try:
                call()
            except Exception:
                log.exception("%s: job %s failed", self.name, job.name)
        self.passes += 1

    def run(self, *, max_passes: int | None = None) -> None:
        try:
            while not self.stop.is_set() and (max_passes is None or self.passes < max_passes):
                if self.leads is not None and not self.leads():
                    self.close_jobs()
                    continue
                started = time.monotonic()
                self.run_once()
                took = time.monotonic() - started
                if self.on_pass is not None:
                    self.on_pass(took)
                period = float(self.period() if callable(self.period) else self.period)
                self.stop.wait(max(0.0, period - took))
        finally:
            self.close_jobs()
            connection.close()  # this thread's own connection

    def close_jobs(self) -> None:
        """Close the jobs that have a close() and forget them all: the next pass builds them anew."""
        calls, self._calls = self._calls, None
        for job, call in calls or ():
            close = getattr(call, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    log.exception("%s: closing job %s failed", self.name, job.name)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        thread.start()
        return thread
