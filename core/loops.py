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
- "schedules" every HMS_SCHEDULE_POLL_MS: fire due schedules (a loop of its own, so a slow roll-up
             never makes a per-second schedule late);
- "probes"   every HMS_PROBE_FLUSH_MS: store what the probe loop (health.prober, an asyncio thread
             of its own) probed since the last pass; usually run as a process of its own.
Their own threads keep each cadence independent of the others' slowest pass. A job with a
`close()` (one that started threads of its own) has it called when its loop stops, and when its
loop stands by: a loop given `leads` (the controller's lease, controller.leader) asks it before
each pass and runs none while it does not lead, its jobs closed and built afresh once it leads
again (a standby keeps no probing threads, no state a former leadership left behind).

A database outage (core.dberrors) is logged once per process, not as a traceback per job per
pass: the first job that meets it ends the pass (the others would fail alike), and until the
database answers again each pass is a probe (SELECT 1, a fresh connection) instead of the jobs, at
least OUTAGE_RETRY apart; the first pass that reaches it runs the jobs, so a loop resumes within a
period of the database's return. Nothing a pass does (tidying connections, building a job,
leadership) can end the loop's thread: it logs and tries again next pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import connections

from core.dberrors import drop, outage, probe, unavailable

log = logging.getLogger(__name__)
OUTAGE_RETRY = 0.2  # seconds between a loop's probes while the database is down (failover's period is 0)

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
        self._jobs: list[Job] | None = None  # this loop's jobs, read on the first pass
        self._calls: dict[str, Callable[[], object]] = {}  # built so far (a failed build retries)
        self._last: dict[str, float] = {}
        self._db_down = False  # this thread met an outage and has not reached the database since
        self._failing: set[str] = set()  # what failed on the last try, logged once until it works
        self.passes = 0

    def run_once(self) -> None:
        try:
            self._pass()
        except Exception as exc:  # a bug outside any job: say so once, never end the thread
            self._failed("pass", exc)
        self.passes += 1

    def _pass(self) -> None:
        if self._db_down:
            if (err := probe()) is not None:
                outage.failed(f"the {self.name} loop", err)  # counted; logged if it starts an outage
                return
            self._db_down = False
            outage.recovered(f"the {self.name} loop")
        self._tidy_connections()
        if self._jobs is None:
            self._jobs = jobs(self.name)
        now = time.monotonic()
        for job in self._jobs:
            every = job.period()
            if every and now - self._last.get(job.name, -1e18) < every:
                continue
            call = self._calls.get(job.name)
            if call is None:
                try:
                    call = self._calls[job.name] = job.make()
                except Exception as exc:
                    if self._failed(f"building job {job.name}", exc):
                        return
                    continue  # the others still run; this one is built again next pass
                self._failing.discard(f"building job {job.name}")
            self._last[job.name] = now
            try:
                call()
            except Exception as exc:
                if self._failed(f"job {job.name}", exc):
                    return
            else:
                self._failing.discard(f"job {job.name}")

    def _tidy_connections(self) -> None:
        """close_old_connections(), one connection at a time: a connection that cannot even be
        closed is forgotten (the next query reconnects) and the pass goes on."""
        for conn in connections.all(initialized_only=True):
            try:
                conn.close_if_unusable_or_obsolete()
            except Exception as exc:
                if unavailable(exc) is None:  # a dead connection failing to close says nothing new
                    self._failed(f"closing connection {conn.alias}", exc)
                drop(conn.alias)

    def _failed(self, what: str, exc: BaseException) -> bool:
        """Log a failure; True when it is an outage: the pass ends, the next ones probe first."""
        if (db := unavailable(exc)) is not None:
            outage.failed(f"the {self.name} loop ({what})", db)
            drop()  # whatever state the failure left it in; the probe connects afresh
            self._db_down = True
            return True
        if what not in self._failing:  # a persistent bug: one traceback, not one per pass
            self._failing.add(what)
            log.exception("%s: %s failed", self.name, what)
        return False

    def run(self, *, max_passes: int | None = None) -> None:
        try:
            while not self.stop.is_set() and (max_passes is None or self.passes < max_passes):
                try:
                    leading = self.leads is None or self.leads()
                except Exception as exc:  # leadership itself failed: stand by and ask again
                    self._failed("leadership", exc)
                    leading = False
                    self.stop.wait(OUTAGE_RETRY)
                if not leading:
                    self.close_jobs()
                    continue
                started = time.monotonic()
                self.run_once()
                took = time.monotonic() - started
                if self.on_pass is not None:
                    try:
                        self.on_pass(took)
                    except Exception as exc:
                        self._failed("on_pass", exc)
                period = float(self.period() if callable(self.period) else self.period)
                if self._db_down:
                    period = max(period, OUTAGE_RETRY)
                self.stop.wait(max(0.0, period - took))
        finally:
            self.close_jobs()
            drop()  # this thread's own connection

    def close_jobs(self) -> None:
        """Close the jobs that have a close() and forget them all: the next pass builds them anew."""
        calls, self._calls, self._jobs = self._calls, {}, None
        for name, call in calls.items():
            close = getattr(call, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    log.exception("%s: closing job %s failed", self.name, name)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        thread.start()
        return thread
