"""The controller process: one thread per loop of core.loops, each running the jobs the apps
registered (fleet: reconcile and fail-over; workflows: lease sweeps; health: the probe loop and
roll-ups; slo: SLO evaluation; autoscaling: the autoscaler; audit: the one sealer).

Second-grained, so it lives here rather than in django-q2's minute schedules; the heavy work the
jobs decide on runs as django-q2 tasks. The controller owns no domain logic: it only runs loops.

How the loops are split between processes: `manage.py controller` runs every loop (a console in
one process, probes included); `manage.py up` runs two controller processes instead, one with
CONTROL_LOOPS and one with the probe loop alone (`--loops probes`), so the probes never share a
process (and its GIL) with a 1.5 s reconcile pass or the monitor's roll-ups.

Each loop is led by one process at a time (controller.leader: a lease per loop that PostgreSQL
arbitrates), whatever the layout: two plain controllers, `up`'s split, a plain one beside a
`--loops probes` one. A process runs the passes of the loops it leads and stands by for the
others, taking a loop over when its leader's session ends. On SQLite a second controller for a
loop already run refuses to start.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from controller import leader
from controller.models import LoopBeat
from core.dberrors import outage, unavailable
from core.loops import Loop

log = logging.getLogger(__name__)


def loop_periods() -> dict[str, float]:
    """Seconds between passes of each loop; "failover" passes back to back (its job blocks)."""
    return {
        "tick": settings.HMS_CONTROLLER_TICK_MS / 1000,
        "monitor": 0.1,
        "sealer": settings.HMS_AUDIT_SEAL_INTERVAL_MS / 1000,
        "failover": 0.0,
        "probes": settings.HMS_PROBE_FLUSH_MS / 1000,
        "schedules": settings.HMS_SCHEDULE_POLL_MS / 1000,  # a per-second schedule: well inside a second
    }


PROBE_LOOPS = ("probes",)
CONTROL_LOOPS = ("tick", "monitor", "sealer", "failover", "schedules")  # the controller's, when probes run apart


class Beat:
    """A loop's heartbeat row (controller.models.LoopBeat), written after a pass at most once a
    second: enough for "is it alive, how long do its passes take", cheap at a 100 ms period. A
    standby's row is refreshed as often (it is alive, leading nothing). Leadership is written when
    it changes (`role`), not with each beat, so a leader that lost its lease and has one pass left
    never re-asserts it. A database error is logged once and never stops the loop."""

    EVERY = 1.0

    def __init__(self, loop: str) -> None:
        self.key = {"host": socket.gethostname(), "pid": os.getpid(), "loop": loop}
        self.started_at = timezone.now()
        self.written = -1e9
        self.passes = 0
        self.last_pass_ms = 0.0
        self.failing = False
        self.leader: bool | None = None  # the role last written (None: none yet)

    def __call__(self, took: float) -> None:
        self.passes += 1
        self.last_pass_ms = round(took * 1000, 2)
        self.refresh()

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self.written < self.EVERY:
            return
        self.written = now
        self._write(lambda: self._upsert({}))

    def role(self, leading: bool, since: object = None) -> None:
        """Record a change of role; a new leader clears the flag on the row of the leader it
        replaced (that one's session is gone, or we could not hold the lock), in one transaction."""
        if leading == self.leader:
            return
        # Unknown until written: a write lost to an outage is retried, so a leader re-elected after
        # it records its new `since` instead of keeping the row it wrote before.
        self.leader = None

        def write() -> None:
            with transaction.atomic():
                if leading:
                    (LoopBeat.objects.filter(loop=self.key["loop"], leader=True)
                     .exclude(host=self.key["host"], pid=self.key["pid"]).update(leader=False))
                self._upsert({"leader": leading, "since": since if leading else None})
            self.leader = leading
            self.written = time.monotonic()

        self._write(write)

    def _upsert(self, extra: dict[str, object]) -> None:
        fields = {"beat_at": timezone.now(), "last_pass_ms": self.last_pass_ms, "passes": self.passes, **extra}
        if not LoopBeat.objects.filter(**self.key).update(**fields):
            LoopBeat.objects.create(**self.key, started_at=self.started_at, **fields)

    def _write(self, write: Callable[[], None]) -> None:
        try:
            write()
            self.failing = False
        except DatabaseError as exc:
            if unavailable(exc) is not None:
                outage.failed(f"the {self.key['loop']} heartbeat", exc)  # logged once per outage
            elif not self.failing:
                log.warning("%s: cannot record its heartbeat (%s)", self.key["loop"], exc)
            self.failing = True

    def clear(self) -> None:
        try:
            LoopBeat.objects.filter(**self.key).delete()
        except DatabaseError:
            pass  # a row of a stopped process only looks stale; readers judge by beat_at


class Controller:
    def __init__(self, loops: tuple[str, ...] | None = None) -> None:
        # Set by SIGTERM/SIGINT: each loop finishes its pass and returns, instead of being cut off
        # mid-query by an exception (which can leave a lock or a connection half-released).
        self.stopping = threading.Event()
        periods = loop_periods()
        names = loops or tuple(periods)
        self.beats = {name: Beat(name) for name in names}
        self.loops = {name: Loop(name, periods[name], stop=self.stopping, on_pass=self.beats[name])
                      for name in names}
        self.leases: dict[str, leader.Lease] = {}

    def claim(self) -> None:
        """Take a lease per loop; each loop then runs its passes only while it leads. SQLite:
        raises leader.Refused when another controller runs one of these loops."""
        if self.leases:
            return
        self.leases = leader.leases(self.loops, stop=self.stopping)
        for name, lease in self.leases.items():
            self.loops[name].leads = self._leads(lease, self.beats[name])

    @staticmethod
    def _leads(lease: leader.Lease, beat: Beat) -> Callable[[], bool]:
        def leads() -> bool:
            leading = lease.leads()
            beat.role(leading, lease.since)
            if not leading:
                beat.refresh()  # a standby is alive too: its row says so
            return leading

        return leads

    def release(self) -> None:
        for lease in self.leases.values():
            lease.release()
        self.leases = {}

    def tick(self) -> None:
        """One pass of every loop but the blocking fail-over watch and the probes (tests): a probe
        loop's pass only stores what its event loop thread probed since the last one, so a single
        pass would start that thread and store nothing."""
        for name, loop in self.loops.items():
            if name not in ("failover", *PROBE_LOOPS):
                loop.run_once()

    def run_forever(self, *, max_ticks: int | None = None) -> None:
        """Run the loops until stopped; with max_ticks, until the tick loop (or the first one, when
        the tick is not among them) made that many passes."""
        self.claim()
        main = "tick" if "tick" in self.loops else next(iter(self.loops))
        threads = [loop.start() for name, loop in self.loops.items() if name != main]
        try:
            self.loops[main].run(max_passes=max_ticks)
        finally:
            self.stopping.set()
            for thread in threads:
                thread.join(timeout=35)
            # Only now, each loop's jobs closed: a standby taking over must not overlap our last pass.
            for beat in self.beats.values():
                beat.clear()
            self.release()
