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
import threading

from django.conf import settings

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


class Controller:
    def __init__(self, loops: tuple[str, ...] | None = None) -> None:
        # Set by SIGTERM/SIGINT: each loop finishes its pass and returns, instead of being cut off
        # mid-query by an exception (which can leave a lock or a connection half-released).
        self.stopping = threading.Event()
        periods = loop_periods()
        self.loops = {name: Loop(name, periods[name], stop=self.stopping) for name in (loops or tuple(periods))}

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
