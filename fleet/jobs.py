"""fleet's controller jobs (registered in fleet/apps.py): reconcile every service each tick, and
converge a service the moment its engine reports a death."""

from __future__ import annotations

import logging
import threading
import time

from django.db import InterfaceError, OperationalError
from django.db.models import Q

from fleet import actions, nodes, reconcile
from fleet.drivers import EngineUnavailable, Observed, get_driver
from fleet.locks import LockTimeout
from fleet.models import Instance, Service, SwarmNode

log = logging.getLogger(__name__)

# Set while a reported death is being replaced: the tick steps aside between services (bounded),
# leaving the machine's CPU to that replacement's container start.
failing_over = threading.Event()
YIELD_SECONDS = 2.0  # a tick steps aside for this long at most


class Reconciler:
    """The "tick" job: converge every service that has something to do (fail-over of dead
    instances included). The fleet is read in two queries and each engine listed once; a service
    at rest (reconcile.at_rest) costs no query, no lock and no engine call, only its instances'
    changed CPU and memory figures, written in one bulk update."""

    def __init__(self) -> None:
        self.engine_down: set[str] = set()
        self.last_pass: dict[str, int] = {}  # what the last pass did (the bench and tests read it)

    def __call__(self) -> None:
        yield_until = time.monotonic() + YIELD_SECONDS
        view = reconcile.fleet_view()
        for driver, listing in view.listings.items():
            if isinstance(listing, EngineUnavailable):
                self.engine_unavailable(driver, listing)
            elif driver in self.engine_down:
                self.engine_down.discard(driver)
                log.warning("%s engine is back; converging", driver)
        resting: list[Service] = []
        converged = 0
        for svc in view.services:
            listing = view.listings.get(svc.driver)
            if isinstance(listing, EngineUnavailable):
                continue  # nothing can be done there until it is back (logged once above)
            spares = bool(reconcile.WARM_SPARES) and svc.driver == "docker"
            if reconcile.at_rest(svc, svc.live, view.listed(svc), spares=spares, declarative=svc.driver == "swarm"):
                resting.append(svc)
                continue
            yield_to_failover(yield_until)
            self.converge(svc.pk, svc.name, svc.driver, listed=view.listed(svc))
            converged += 1
        observed = reconcile.record_observations(view, resting)
        self.last_pass = {"services": len(view.services), "at_rest": len(resting), "converged": converged,
                          "observations": observed}

    def converge(self, svc_id: int, name: str, driver: str, *, listed: list[Observed] | None = None) -> None:
        try:
            reconcile.converge(svc_id, component="controller", name=name, listed=listed)
            if driver in self.engine_down:
                self.engine_down.discard(driver)
                log.warning("%s engine is back; converging", driver)
        except EngineUnavailable as exc:
            self.engine_unavailable(driver, exc)
        except LockTimeout:
            pass  # a web request is converging this service right now
        except (OperationalError, InterfaceError):
            raise  # the database went away: the loop's outage handling waits for it (quietly)
        except Exception:
            log.exception("reconcile of %s failed", name)

    def engine_unavailable(self, driver: str, exc: Exception) -> None:
        if driver not in self.engine_down:
            log.error("%s engine unreachable (%s); desired state kept, retrying", driver, exc)
            self.engine_down.add(driver)


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
            # Engines report the service's key (ServiceSpec.key): its id, or "name:<name>" for an
            # instance started before ids were carried.
            ids = [int(k) for k in reported if k.isdigit()]
            names = [k[5:] for k in reported if k.startswith("name:")]
            rows = Service.objects.filter(Q(pk__in=ids) | Q(name__in=names))
            for svc_id, name, driver in rows.values_list("id", "name", "driver"):
                self.reconciler.converge(svc_id, name, driver)
        finally:
            failing_over.clear()


class NodeSync:
    """The "fleet.nodes" job of the tick loop: the swarm's nodes, once a second, whenever a Swarm
    service exists (the driver's listing of the tick is reused when it is fresh)."""

    def __call__(self) -> None:
        if not Service.objects.filter(driver=Service.Driver.SWARM).exists() and not SwarmNode.objects.exists():
            return
        driver = get_driver("swarm")
        try:
            listed = driver.nodes(max_age=0.4)
        except EngineUnavailable:
            return  # the tick's breaker reports the engine; rows keep their last state
        nodes.sync(listed)


class Rebalancer:
    """The "fleet.rebalance" job of the tick loop."""

    def __init__(self) -> None:
        self.surge_started: dict[int, float] = {}

    def __call__(self) -> None:
        services = list(Service.objects.filter(driver=Service.Driver.SWARM, rebalance=Service.Rebalance.ON_RECOVERY))
        if not services:
            return
        ready = list(SwarmNode.objects.filter(state="ready", availability="active", gone=False)
                     .values_list("hostname", flat=True))
        # Every such service's live tasks in one query, whatever the fleet's size.
        live: dict[int, list[tuple[str, str, str]]] = {svc.pk: [] for svc in services}
        for service_id, node, state, health in (Instance.objects.filter(
                service__in=services, driver="swarm", state__in=Instance.LIVE_STATES)
                .values_list("service_id", "node", "state", "health")):
            live[service_id].append((node, state, health))
        for svc in services:
            counts = dict.fromkeys(ready, 0)
            for node, state, _health in live[svc.pk]:
                if state == Instance.State.RUNNING and node in counts:
                    counts[node] += 1
            healthy = sum(1 for _n, state, health in live[svc.pk]
                          if state == Instance.State.RUNNING and health == Instance.Health.UP)
            # A surge found in progress (a new leader, a restart) is timed from now.
            started = self.surge_started.setdefault(svc.pk, time.monotonic()) if svc.surge else None
            age = time.monotonic() - started if started is not None else None
            step = nodes.rebalance_step(svc.desired_instances, svc.surge, counts, healthy, age)
            if step == "surge":
                self.surge_started[svc.pk] = time.monotonic()
                actions.rebalance(svc, surge=1, counts=counts)
            elif step == "settle":
                self.surge_started.pop(svc.pk, None)
                actions.rebalance(svc, surge=0, counts=counts)
