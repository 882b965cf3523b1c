"""The controller process: one thread per loop of core.loops, each running the jobs the apps
registered (fleet: reconcile and fail-over; workflows: lease sweeps; health: the probe loop and
roll-ups; slo: SLO evaluation; autoscaling: the autoscaler; audit: the one sealer).

Second-grained, so it lives here rather than in django-q2's minute schedules; the heavy work the
jobs decide on runs as django-q2 tasks. The controller owns no domain logic: it only runs loops.

How the loops are split between processes: `manage.py controller` runs every loop (a console in
one process, probes included); `manage.py up` runs two controller processes instead, one with
CONTROL_LOOPS and one with the probe loop alone (`--loops probes`), so the probes never share a
process (and its GIL) with a 1.5 s reconcile pass or the monitor's roll-ups. A deployment picks
one of the two layouts: a plain `controller` next to a `controller --loops probes` probes twice.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from controller.models import LoopBeat
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
    }


PROBE_LOOPS = ("probes",)
CONTROL_LOOPS = ("tick", "monitor", "sealer", "failover")  # the controller's, when probes run apart


class Beat:
    """A loop's heartbeat row (controller.models.LoopBeat), written after a pass at most once a
    second: enough for "is it alive, how long do its passes take", cheap at a 100 ms period. A
    database error is logged once and never stops the loop."""

    EVERY = 1.0

    def __init__(self, loop: str) -> None:
        self.key = {"host": socket.gethostname(), "pid": os.getpid(), "loop": loop}
        self.started_at = timezone.now()
        self.written = -1e9
        self.passes = 0
        self.failing = False

    def __call__(self, took: float) -> None:
        self.passes += 1
        now = time.monotonic()
        if now - self.written < self.EVERY:
            return
        self.written = now
        fields = {"beat_at": timezone.now(), "last_pass_ms": round(took * 1000, 2), "passes": self.passes}
        try:
            if not LoopBeat.objects.filter(**self.key).update(**fields):
                LoopBeat.objects.create(**self.key, started_at=self.started_at, **fields)
            self.failing = False
        except DatabaseError as exc:
            if not self.failing:
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
        main = "tick" if "tick" in self.loops else next(iter(self.loops))
        threads = [loop.start() for name, loop in self.loops.items() if name != main]
        try:
            self.loops[main].run(max_passes=max_ticks)
        finally:
            self.stopping.set()
            for thread in threads:
                thread.join(timeout=35)
            for beat in self.beats.values():
                beat.clear()
