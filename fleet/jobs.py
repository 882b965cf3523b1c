"""fleet's controller jobs (registered in fleet/apps.py): reconcile every service each tick, and
converge a service the moment its engine reports a death."""

from __future__ import annotations

import logging
import threading
import time

from fleet import reconcile
from fleet.drivers import EngineUnavailable
from fleet.locks import LockTimeout
from fleet.models import Service

log = logging.getLogger(__name__)

# Set while a reported death is being replaced: the tick steps aside between services (bounded),
# leaving the machine's CPU to that replacement's container start.
failing_over = threading.Event()
YIELD_SECONDS = 2.0  # a tick steps aside for this long at most


class Reconciler:
    """The "tick" job: converge every service (fail-over of dead instances included)."""

    def __init__(self) -> None:
        self.engine_down: set[str] = set()

    def __call__(self) -> None:
        yield_until = time.monotonic() + YIELD_SECONDS
        for svc_id, name, driver in Service.objects.values_list("id", "name", "driver"):
            yield_to_failover(yield_until)
            self.converge(svc_id, name, driver)

    def converge(self, svc_id: int, name: str, driver: str) -> None:
        try:
            reconcile.converge(svc_id, component="controller", name=name)
            if driver in self.engine_down:
                self.engine_down.discard(driver)
                log.warning("%s engine is back; converging", driver)
        except EngineUnavailable as exc:
            if driver not in self.engine_down:
                log.error("%s engine unreachable (%s); desired state kept, retrying", driver, exc)
                self.engine_down.add(driver)
        except LockTimeout:
            pass  # a web request is converging this service right now
        except Exception:
            log.exception("reconcile of %s failed", name)


def yield_to_failover(until: float, stop: threading.Event | None = None) -> None:
    while failing_over.is_set() and time.monotonic() < until and not (stop and stop.is_set()):
        time.sleep(0.01)


class FailoverWatch:
    """The "failover" job: deaths reported by an engine are converged the moment they arrive, not
    after the tick in progress (a tick over every service takes a good 100 ms). The per-service
    lock keeps it and the tick from converging one service at the same time. Engines that stream
    events (Docker) start reporting when this job is built."""

    def __init__(self) -> None:
        self.reconciler = Reconciler()
        reconcile.start_watchers()

    def __call__(self) -> None:
        reported = reconcile.wait_urgent(0.2)
        if not reported:
            return
        failing_over.set()
        try:
            for svc_id, name, driver in Service.objects.filter(name__in=reported).values_list("id", "name", "driver"):
                self.reconciler.converge(svc_id, name, driver)
        finally:
            failing_over.clear()
