"""Reconciliation: make what runs match the desired count. Called by the controller every tick
and by the web request right after a scale (so a scale converges without waiting for a tick).

Everything happens under the per-service lock (fleet.locks), so two convergers (web, controller,
a workflow step) never start duplicates. Instance rows are observed state; only fail-over (an
unrequested death) is an audited event.

Imperative drivers (process, docker): we start and stop instances ourselves.
  0. deaths the engine already reported (docker's event stream) after a healthy life: the
     replacement's engine start begins at once, on a worker thread, while step 1 lists the engine
     and records the fail-overs;
  1. deaths: a live row the engine shows dead or no longer shows → `failover`, carcass removed;
     an instance that never turns healthy within HMS_START_TIMEOUT_SECONDS counts as dead too;
  2. orphans: anything of this service on the engine that no live row claims is removed (a start
     whose row was rolled back, a container created just before the engine went away…);
  3. starting instances that answer their health path become running;
  4. count up or down (newest first); a crash loop (the service's backoff_until) holds starts back;
     outdated instances (older spec_version, or another driver) roll over one at a time: start one
     new, wait until it is healthy, retire one old, repeat, so capacity never drops below desired
     and never exceeds desired + 1.

Declarative drivers (swarm): the engine keeps the replica count and restarts failed tasks itself;
we set replicas (and the spec, which Swarm rolls one task at a time), and mirror its tasks into
Instance rows: a task that failed is a `failover`, a task shut down on purpose is just stopped.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Prefetch
from django.utils import timezone

from core.errors import ApiError
from fleet import actions, breakers
from fleet.drivers import Driver, EngineUnavailable, get_driver
from fleet.drivers.base import Observed, ServiceSpec
from fleet.locks import LockTimeout, service_lock
from fleet.models import Instance, Service

log = logging.getLogger(__name__)
HEALTH_TIMEOUT = 0.5
# An instance that is still not healthy this long after its start is treated as dead (and counts
# toward crash-loop back-off), so a broken image cannot block a roll-over forever.
START_TIMEOUT = timedelta(seconds=settings.HMS_START_TIMEOUT_SECONDS)
# Warm spares per service, for drivers that can run one (docker): a running container nobody claims
# yet, adopted on fail-over so no container start sits between a death and a healthy replacement.
# Costs one idle container per service; 0 (the default) turns it off.
WARM_SPARES = settings.HMS_DOCKER_WARM_SPARES
# Engine starts that overlap a pass's bookkeeping (_start_reported_replacements): no database access.
_ENGINE_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="engine-start")
# How long a start waits for the new instance's first healthy answer (probing every 5 ms) before
# leaving its promotion to a later pass.
START_HEALTH_WAIT = 0.5


@dataclass
class Status:
    desired: int
    running: int
    starting: int
    backing_off: bool = False

    @property
    def converged(self) -> bool:
        return self.running == self.desired and self.starting == 0


def _healthy(inst: Instance, health_path: str) -> bool:
    return _probe(inst.host, inst.port, health_path)


def _probe(host: str, port: int | None, health_path: str) -> bool:
    if not host or not port:
        return False
    try:
        resp = requests.get(f"http://{host}:{port}{health_path}", timeout=HEALTH_TIMEOUT,
                            allow_redirects=False)  # the instance itself, never where it points
    except requests.RequestException:
        return False
    return resp.status_code == 200


def status(service: Service, *, live: tuple[int, int] | None = None) -> Status:
    """live: (running, starting) when the caller read them already (with the service itself)."""
    if live is None:
        counts = {s: 0 for s in Instance.State}
        for state in service.instances.filter(state__in=Instance.LIVE_STATES).values_list("state", flat=True):
            counts[state] += 1
        live = (counts[Instance.State.RUNNING], counts[Instance.State.STARTING])
    backing_off = bool(service.backoff_until and service.backoff_until > timezone.now())
    return Status(service.desired_instances, live[0], live[1], backing_off)


def converge(
    service_id: int, *, component: str = "controller", lock_timeout: float = 30.0, name: str | None = None,
    listed: list[Observed] | None = None,
) -> Status:
    """One reconcile pass over a service, under its lock (held by id: see fleet.locks). name: kept
    for callers' logs; unused. listed: what the tick's fleet-wide engine listing showed for this
    service (see `_observed`)."""
    with service_lock(service_id, timeout=lock_timeout):
        svc = Service.objects.get(pk=service_id)
        driver = get_driver(svc.driver)
        spec = svc.spec()
        if driver.declarative:
            _converge_declarative(svc, driver, spec, component)
        else:
            _converge_imperative(svc, driver, spec, component, listed)
        svc.refresh_from_db()
        return status(svc)


# --- the tick: one engine listing for the fleet, and only the services with something to do ----------
@dataclass
class FleetView:
    """What the tick read once for the whole fleet: every service with its live instance rows (two
    queries) and, per driver that can list everything at once, the engine's instances by service
    name (one /proc scan, one Docker list by label). A driver whose engine is away maps to the
    exception."""

    services: list[Service]
    listings: dict[str, dict[str, list[Observed]] | EngineUnavailable]

    def listed(self, svc: Service) -> list[Observed] | None:
        listing = self.listings.get(svc.driver)
        return listing.get(svc.name) if isinstance(listing, dict) else None


def fleet_view() -> FleetView:
    live = Instance.objects.filter(state__in=Instance.LIVE_STATES).order_by("id")
    services = list(Service.objects.prefetch_related(Prefetch("instances", queryset=live, to_attr="live")))
    listings: dict[str, dict[str, list[Observed]] | EngineUnavailable] = {}
    for name in sorted({svc.driver for svc in services}):
        driver = get_driver(name)
        list_all = getattr(driver, "list_all", None)
        if list_all is None:
            continue  # an engine that cannot list everything at once: converged service by service
        specs = {svc.name: svc.spec() for svc in services if svc.driver == name}
        try:
            if getattr(driver, "engine", None) is None:
                listings[name] = list_all(specs)  # this host's /proc: nothing remote to hang on
            else:
                # Through the engine's breaker, on a thread of its own: a hung engine costs this
                # pass at most HMS_ENGINE_WAIT_SECONDS once, then nothing while its breaker is open.
                listings[name] = breakers.guard(name).call(lambda fn=list_all, s=specs: fn(s), time.monotonic())
        except EngineUnavailable as exc:
            listings[name] = exc
    return FleetView(services, listings)


def at_rest(svc: Service, live: list[Instance], listed: list[Observed] | None, *, spares: bool = False,
            declarative: bool = False) -> bool:
    """Nothing for a reconcile pass to do (pure): as many instances as desired, all running, of the
    current spec and driver, each shown alive by the engine, and nothing else of the service on the
    engine (no orphan, no carcass; for Swarm: no task of it wanted running that is not running,
    and its service already at the desired replicas and spec). Such a service is skipped by the
    tick; anything else, or no listing to judge by, gets a full pass under its lock."""
    if listed is None or spares or len(live) != svc.desired_instances + svc.surge:
        return False
    if declarative:
        wanted = [o for o in listed if o.extra.get("desired") == "running"]
        if any(o.extra.get("replicas") != svc.desired_instances + svc.surge
               or o.extra.get("service_version") != str(svc.spec_version) for o in listed):
            return False
        listed = wanted
    if len(listed) != len(live):
        return False
    alive = {o.ref for o in listed if o.alive}
    return all(i.state == Instance.State.RUNNING and i.driver == svc.driver and i.spec_version == svc.spec_version
               and i.ref in alive for i in live)


def record_observations(view: FleetView, services: list[Service]) -> int:
    """CPU, memory and address of the running instances of services at rest, as the listing showed
    them: only changed rows, in one bulk update (observed state, not audited)."""
    changed: list[Instance] = []
    fields = ("cpu_percent", "memory_bytes", "node", "host", "port")
    for svc in services:
        by_ref = {o.ref: o for o in view.listed(svc) or []}
        for inst in svc.live:
            obs = by_ref.get(inst.ref)
            if obs is None:
                continue
            dirty = False
            for name in fields:
                value = getattr(obs, name)
                if value not in (None, "") and value != getattr(inst, name):
                    setattr(inst, name, value)
                    dirty = True
            if dirty:
                changed.append(inst)
    if changed:
        with _observed_state_write():
            Instance.objects.bulk_update(changed, fields, batch_size=500)
    return len(changed)


# --- imperative drivers (process, docker) ------------------------------------------------------
def _observed(driver: Driver, spec: ServiceSpec, live: list[Instance], listed: list[Observed] | None,
              driver_name: str) -> dict[str, Observed]:
    """The engine's view of the service. The tick's fleet-wide listing was taken before this pass
    took the lock: an instance started since (by a web request, say) is missing from it, so a live
    row it does not show is confirmed by a fresh listing before anything counts as dead. What it
    does show existed then, and what ran then but is unclaimed now is an orphan either way."""
    if listed is not None:
        observed = {o.ref: o for o in listed}
        if all(i.ref in observed for i in live if i.ref and i.driver == driver_name):
            return observed
    return {o.ref: o for o in driver.list_instances(spec)}


def _converge_imperative(svc: Service, driver: Driver, spec: ServiceSpec, component: str,
                         listed: list[Observed] | None = None) -> None:
    live = list(svc.instances.filter(state__in=Instance.LIVE_STATES).order_by("id"))
    others = [i for i in live if i.driver != svc.driver]  # the service's driver was changed
    now = timezone.now()
    # 0. Deaths the engine has already reported (docker's event stream): their replacements start
    # now, on a worker thread, while this pass lists the engine and records the fail-overs. A
    # container start is a few hundred ms of waiting on the engine; the bookkeeping needs none of it.
    replacing = _start_reported_replacements(svc, driver, spec, live, others, now)
    try:
        observed = _observed(driver, spec, live, listed, svc.driver)  # may raise EngineUnavailable

        # 1. Deaths. Carcasses are removed at the end of the pass: the replacement starts first.
        claimed: set[str] = set()
        carcasses: list[str] = []
        survivors: list[Instance] = []
        for inst in live:
            if inst.driver != svc.driver:
                continue
            obs = observed.get(inst.ref) if inst.ref else None
            if inst.ref:
                claimed.add(inst.ref)
            if obs is None or not obs.alive:
                detail = obs.detail if obs and obs.detail else ("disappeared" if inst.ref else "never started")
                actions.record_failover(
                    inst, cause=f"{svc.driver} instance {inst.ref or inst.pk} {detail}", component=component
                )
                if obs is not None:
                    carcasses.append(inst.ref)
                continue
            if inst.state == Instance.State.STARTING and now - (inst.started_at or inst.created_at) > START_TIMEOUT:
                if _healthy(inst, svc.health_path):
                    survivors.append(inst)  # became healthy at the last moment; step 3 promotes it
                    continue
                actions.record_failover(
                    inst,
                    cause=f"{svc.driver} instance {inst.ref} not healthy after {START_TIMEOUT.seconds} s",
                    component=component,
                )
                carcasses.append(inst.ref)
                continue
            _refresh(inst, obs)
            survivors.append(inst)
    finally:
        # Whatever happened above, the replacements already asked for are recorded (or, if the
        # engine went away meanwhile, marked not started) before this pass goes on or gives up.
        started = _finish_replacements(svc, replacing, component)
    survivors += started
    replacements = {inst.pk for inst, _pending in replacing}

    # 2. Orphans: on the engine, but no live row claims them (a warm spare of the current spec is kept).
    want_spares = WARM_SPARES if hasattr(driver, "start_spare") and svc.desired_instances > 0 else 0
    spares: list[Observed] = []
    for ref, obs in observed.items():
        if ref in claimed or ref in carcasses or obs.instance_id in replacements:
            continue
        if (
            obs.extra.get("spare")
            and obs.alive
            and obs.extra.get("spec_version") == str(svc.spec_version)
            and len(spares) < want_spares
        ):
            spares.append(obs)
            continue
        log.warning(
            "removing orphan %s instance %s of %s (%s)",
            svc.driver,
            ref,
            svc.name,
            "alive" if obs.alive else obs.detail or "dead",
        )
        _remove(driver, spec, ref, grace=2.0 if obs.alive else 0.0)

    # 3. Health of starting instances.
    for inst in survivors:
        if inst.state == Instance.State.STARTING and _healthy(inst, svc.health_path):
            Instance.objects.filter(pk=inst.pk).update(
                state=Instance.State.RUNNING, health=Instance.Health.UP, healthy_at=timezone.now()
            )
            inst.state = Instance.State.RUNNING

    # 4. Count up or down, rolling outdated instances over. A fail-over above may just have started
    # a back-off (record_failover updated the row, not our copy): read it again.
    svc.refresh_from_db(fields=["desired_instances", "failure_streak", "backoff_until"])
    _scale_to_desired(svc, driver, spec, survivors, others, component, spares)
    for ref in carcasses:
        _remove(driver, spec, ref)

    # 5. Top the warm spares up (not during a roll-over or a crash loop: they would be wasted).
    rolling = bool(others) or any(i.spec_version != svc.spec_version for i in survivors)
    backing_off = bool(svc.backoff_until and svc.backoff_until > timezone.now())
    if want_spares and svc.desired_instances > 0 and not rolling and not backing_off:
        for _ in range(want_spares - len(spares)):
            try:
                driver.start_spare(spec)  # type: ignore[attr-defined]
            except EngineUnavailable:
                raise
            except Exception as exc:
                log.warning("cannot start a warm spare of %s: %s", svc.name, exc)
                break


def _start_reported_replacements(
    svc: Service, driver: Driver, spec: ServiceSpec, live: list[Instance], others: list[Instance], now: datetime
) -> list[tuple[Instance, Future]]:
    """Start the replacements of instances whose death the engine reported, before the pass lists
    the engine and records the deaths. Only for deaths after a healthy life (record_failover then
    clears any back-off, so step 4 would start them anyway), with no roll-over under way and no warm
    spares (adopting one is faster). Never more than step 4 would start: the live instances not
    reported dead count as running, so a death the report missed is left to step 4."""
    reported_death = getattr(driver, "reported_death", None)
    if reported_death is None or WARM_SPARES or others or any(i.spec_version != svc.spec_version for i in live):
        return []
    dead = [i for i in live if i.ref and reported_death(i.ref)]
    if not dead or any(
        i.state != Instance.State.RUNNING or now - (i.started_at or i.created_at) < actions.EARLY_DEATH for i in dead
    ):
        return []
    count = min(len(dead), svc.desired_instances - (len(live) - len(dead)))
    rows = [_new_row(svc, pending_exits=len(dead)) for _ in range(max(0, count))]
    return [(inst, _ENGINE_POOL.submit(_engine_start, driver, spec, inst.pk, svc.health_path)) for inst in rows]


def _finish_replacements(svc: Service, replacing: list[tuple[Instance, Future]], component: str) -> list[Instance]:
    started: list[Instance] = []
    unavailable: EngineUnavailable | None = None
    for inst, pending in replacing:
        try:
            done = _record_start(svc, inst, *pending.result(), component=component)
        except EngineUnavailable as exc:
            unavailable = exc  # record every outcome first, then report the engine away
            continue
        if done is not None:
            started.append(done)
    if unavailable is not None:
        raise unavailable
    return started


def _scale_to_desired(
    svc: Service,
    driver: Driver,
    spec: ServiceSpec,
    survivors: list[Instance],
    others: list[Instance],
    component: str,
    spares: list[Observed] | None = None,
) -> None:
    desired = svc.desired_instances
    backing_off = bool(svc.backoff_until and svc.backoff_until > timezone.now())
    current = [i for i in survivors if i.spec_version == svc.spec_version]
    outdated = others + [i for i in survivors if i.spec_version != svc.spec_version]
    if outdated:
        # Roll over one at a time: wait for the surge instance, retire one old, start one new.
        if any(i.state == Instance.State.STARTING for i in current):
            return
        if len(current) + len(outdated) > desired or len(current) >= desired:
            _retire(svc, outdated[-1], reason="rolled over to a new spec")
        elif not backing_off:
            _start(svc, driver, spec, component=component, spares=spares)
        return
    missing = desired - len(current)
    if missing > 0 and not backing_off:
        _start_many(svc, driver, spec, missing, component=component, spares=spares)
    elif missing < 0:
        for inst in sorted(current, key=lambda i: i.id, reverse=True)[:-missing]:
            _stop(svc, inst, reason="scaled down")


def _refresh(inst: Instance, obs: Observed) -> None:
    changed: dict[str, object] = {}
    for name in ("cpu_percent", "memory_bytes", "node", "host", "port"):
        value = getattr(obs, name)
        if value not in (None, "") and value != getattr(inst, name):
            changed[name] = value
    if changed:
        Instance.objects.filter(pk=inst.pk).update(**changed)
        for name, value in changed.items():
            setattr(inst, name, value)


def _start(
    svc: Service,
    driver: Driver,
    spec: ServiceSpec,
    *,
    component: str = "controller",
    spares: list[Observed] | None = None,
) -> Instance | None:
    """Start one instance; None when the engine refused (that counts as a crash: back-off)."""
    if spares:
        return _adopt(svc, spares.pop(0))
    inst = _new_row(svc)
    return _record_start(svc, inst, *_engine_start(driver, spec, inst.pk, svc.health_path), component=component)


def _start_many(
    svc: Service, driver: Driver, spec: ServiceSpec, count: int, *, component: str, spares: list[Observed] | None
) -> None:
    """Start count instances. The engine calls run side by side (a container start is half a
    second of mostly waiting on the engine); every database write stays on this thread."""
    while spares and count > 0:
        _adopt(svc, spares.pop(0))
        count -= 1
    if count <= 0:
        return
    # One alone first: an engine that refuses (a missing image) is told once, not `count` times.
    if _start(svc, driver, spec, component=component) is None or count == 1:
        return
    rows = [_new_row(svc) for _ in range(count - 1)]
    with ThreadPoolExecutor(max_workers=min(8, len(rows)), thread_name_prefix="start") as pool:
        outcomes = list(pool.map(lambda inst: _engine_start(driver, spec, inst.pk, svc.health_path), rows))
    unavailable: EngineUnavailable | None = None
    for inst, outcome in zip(rows, outcomes, strict=True):
        try:
            _record_start(svc, inst, *outcome, component=component)
        except EngineUnavailable as exc:
            unavailable = exc  # record every outcome first, then report the engine away
    if unavailable is not None:
        raise unavailable


@contextmanager
def _observed_state_write() -> Iterator[None]:
    """A transaction for Instance rows, which are observed state (no audit entry goes through here):
    committed and visible to every session at once, without waiting for the WAL flush (PostgreSQL's
    synchronous_commit off, for this transaction only). On a busy disk that flush can take tens of
    ms, and a start waits for two of them (the new row, then running). Only a crash of the database
    server itself can lose such a commit; the container it named is then an orphan, removed by the
    next pass. Inside a caller's transaction (which may hold audit entries) nothing is relaxed."""
    relax = connection.vendor == "postgresql" and not connection.in_atomic_block
    with transaction.atomic():
        if relax:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield


def _new_row(svc: Service, *, pending_exits: int = 0) -> Instance:
    # The row exists (and is committed) before the engine call: its id names the container, so a
    # retried start finds the same container rather than making a second one.
    with _observed_state_write():
        return Instance.objects.create(
            service=svc,
            driver=svc.driver,
            spec_version=svc.spec_version,
            restarts=_restarts_so_far(svc) + pending_exits,
        )


def _engine_start(
    driver: Driver, spec: ServiceSpec, instance_id: int, health_path: str
) -> tuple[Observed | None, bool, Exception | None]:
    """The engine side of a start (no database access: it may run on a worker thread)."""
    try:
        obs = driver.start_instance(spec, instance_id)
    except Exception as exc:
        return None, False, exc
    # A light image answers within milliseconds of its start: promote it now rather than a tick
    # later (a replacement is only routed to once it is running). Bounded: a slow starter is
    # promoted by a later pass.
    deadline = time.monotonic() + START_HEALTH_WAIT
    while True:
        if _probe(obs.host, obs.port, health_path):
            return obs, True, None
        if time.monotonic() >= deadline:
            return obs, False, None
        time.sleep(0.005)


def _record_start(
    svc: Service, inst: Instance, obs: Observed | None, healthy: bool, exc: Exception | None, *, component: str
) -> Instance | None:
    if isinstance(exc, EngineUnavailable):
        # Not a death: the instance never ran. Anything the engine did create before it went away
        # is removed as an orphan once it is back.
        Instance.objects.filter(pk=inst.pk).update(
            state=Instance.State.STOPPED, stopped_at=timezone.now(), exit_reason=f"not started: {exc}"[:300]
        )
        raise exc
    if exc is not None or obs is None:
        # A start the engine refused (missing image, bad command) is a crash too: it backs off, or
        # every tick would hammer the engine with the same doomed request.
        log.error("cannot start %s: %s", svc.name, exc)
        actions.record_failover(inst, cause=f"{svc.driver} start failed: {exc}"[:300], component=component)
        return None
    fields: dict[str, object] = {
        "ref": obs.ref,
        "host": obs.host,
        "port": obs.port,
        "node": obs.node,
        "started_at": obs.started_at or timezone.now(),
    }
    if healthy:
        fields.update(state=Instance.State.RUNNING, health=Instance.Health.UP, healthy_at=timezone.now())
    with _observed_state_write():
        Instance.objects.filter(pk=inst.pk).update(**fields)
    inst.refresh_from_db()
    return inst


def _adopt(svc: Service, spare: Observed) -> Instance:
    """A warm spare becomes the new instance: it is already running (and usually healthy)."""
    with transaction.atomic():
        inst = Instance.objects.create(
            service=svc,
            driver=svc.driver,
            spec_version=svc.spec_version,
            restarts=_restarts_so_far(svc),
            ref=spare.ref,
            host=spare.host,
            port=spare.port,
            node=spare.node,
            started_at=spare.started_at or timezone.now(),
        )
    if _healthy(inst, svc.health_path):
        Instance.objects.filter(pk=inst.pk).update(
            state=Instance.State.RUNNING, health=Instance.Health.UP, healthy_at=timezone.now()
        )
        inst.state = Instance.State.RUNNING
    return inst


def _restarts_so_far(svc: Service) -> int:
    """Replacements inherit the count of earlier unrequested deaths, so the table shows churn."""
    return svc.instances.filter(state=Instance.State.EXITED).count()


def _remove(driver: Driver, spec: ServiceSpec, ref: str, *, grace: float = 0.0) -> None:
    try:
        driver.stop_instance(spec, ref, grace_seconds=grace)
    except EngineUnavailable:
        raise
    except Exception as exc:  # the next tick tries again
        log.warning("cannot remove %s instance %s: %s", driver.name, ref, exc)


def _stop(svc: Service, inst: Instance, *, reason: str) -> None:
    Instance.objects.filter(pk=inst.pk).update(state=Instance.State.STOPPING)
    try:
        if inst.ref:
            get_driver(inst.driver).stop_instance(svc.spec(), inst.ref, grace_seconds=5.0)
    except Exception:
        # Not stopped (engine away?): keep it live so the next tick tries again.
        Instance.objects.filter(pk=inst.pk).update(state=inst.state)
        raise
    Instance.objects.filter(pk=inst.pk).update(
        state=Instance.State.STOPPED, exit_reason=reason, stopped_at=timezone.now(), health=Instance.Health.UNKNOWN
    )


def _retire(svc: Service, inst: Instance, *, reason: str) -> None:
    """Stop one outdated instance. A Swarm task cannot be stopped on its own without Swarm
    replacing it, so an old Swarm service is scaled down by one (and removed at zero)."""
    old = get_driver(inst.driver)
    if not old.declarative:
        _stop(svc, inst, reason=reason)
        return
    remaining = svc.instances.filter(state__in=Instance.LIVE_STATES, driver=inst.driver).count() - 1
    if remaining <= 0:
        old.remove_service(svc.spec())
    else:
        old.set_replicas(svc.spec(), remaining)
    Instance.objects.filter(pk=inst.pk).update(
        state=Instance.State.STOPPED, exit_reason=reason, stopped_at=timezone.now(), health=Instance.Health.UNKNOWN
    )


# --- declarative drivers (swarm) -------------------------------------------------------------------
def _converge_declarative(svc: Service, driver: Driver, spec: ServiceSpec, component: str) -> None:
    tasks = driver.list_instances(spec)  # may raise EngineUnavailable
    by_ref = {t.ref: t for t in tasks}
    live = list(svc.instances.filter(state__in=Instance.LIVE_STATES).order_by("id"))
    others = [i for i in live if i.driver != svc.driver]
    mine = {i.ref: i for i in live if i.driver == svc.driver}
    known = set(svc.instances.filter(driver=svc.driver, ref__in=list(by_ref)).values_list("ref", flat=True))

    # 1. Rows whose task ended: a failure is a fail-over (Swarm restarts it), a shutdown was asked for.
    for ref, inst in mine.items():
        task = by_ref.get(ref)
        if (
            task is not None
            and task.extra.get("desired") == "running"
            and task.extra.get("state") not in ("failed", "rejected", "complete", "orphaned", "lost")
        ):
            _refresh(inst, task)
            if inst.state == Instance.State.STARTING and task.alive and _healthy(inst, svc.health_path):
                Instance.objects.filter(pk=inst.pk).update(
                    state=Instance.State.RUNNING, health=Instance.Health.UP, healthy_at=timezone.now()
                )
            continue
        if task is not None and task.extra.get("state") == "lost":
            # Its node is Down: Swarm reschedules the task elsewhere; the fail-over names the node.
            actions.record_failover(inst, cause=f"swarm task {ref} {task.detail}", component=component, node=task.node)
        elif task is not None and task.extra.get("state") in ("failed", "rejected", "complete", "orphaned"):
            actions.record_failover(
                inst, cause=f"swarm task {ref} on {task.node or '?'} {task.detail}", component=component
            )
        else:
            reason = (
                f"swarm task {task.extra.get('state')} (Swarm wants it {task.extra.get('desired')})"
                if task
                else "swarm task no longer listed"
            )
            Instance.objects.filter(pk=inst.pk).update(
                state=Instance.State.STOPPED,
                exit_reason=reason,
                stopped_at=timezone.now(),
                health=Instance.Health.UNKNOWN,
            )

    # 2. New tasks Swarm scheduled (scale up, restart after a failure, roll-over): mirror them.
    for task in tasks:
        if task.ref in known or task.extra.get("desired") != "running":
            continue
        if task.extra.get("state") in ("failed", "rejected", "complete", "orphaned", "shutdown", "lost"):
            continue
        version = task.extra.get("spec_version", "")
        Instance.objects.create(
            service=svc,
            driver=svc.driver,
            ref=task.ref,
            node=task.node,
            host=task.host,
            port=task.port,
            spec_version=int(version) if str(version).isdigit() else svc.spec_version,
            started_at=task.started_at or timezone.now(),
            restarts=_restarts_so_far(svc),
        )

    # 3. Replicas. While instances of a previous driver still serve, grow the Swarm service one
    # healthy task at a time and retire one old instance per new healthy task.
    desired = svc.desired_instances
    if others:
        healthy = svc.instances.filter(driver=svc.driver, state=Instance.State.RUNNING).count()
        if healthy + len(others) > desired:
            _retire(svc, others[-1], reason=f"rolled over to {svc.driver}")
        driver.set_replicas(spec, min(desired, healthy + 1))
    else:
        # surge: one replica more while a rebalance step waits for its new task (fleet.nodes).
        driver.set_replicas(spec, desired + svc.surge)


# --- wake-ups: engines that report deaths as they happen ------------------------------------------
_urgent: queue.SimpleQueue[str] = queue.SimpleQueue()


def start_watchers(drivers: tuple[str, ...] = ("docker",)) -> None:
    """Let drivers that can follow their engine's events (docker) wake the controller the moment
    an instance dies, instead of at the next tick. Harmless without an engine: the watcher retries."""
    for name in drivers:
        driver = get_driver(name)
        watch = getattr(driver, "watch", None)
        if watch is not None:
            watch(_urgent.put)


def wait_urgent(timeout: float) -> set[str]:
    """Names of services with a reported death, waiting up to timeout for the first one."""
    try:
        names = {_urgent.get(timeout=max(0.0, timeout))}
    except queue.Empty:
        return set()
    while True:
        try:
            names.add(_urgent.get_nowait())
        except queue.Empty:
            return names


# --- console shutdown ------------------------------------------------------------------------------
def stop_local_instances(*, component: str) -> int:
    """Stop every process-driver instance on this host (the console is shutting down); the
    desired counts stay, so the next start brings them back."""
    stopped = 0
    for svc in Service.objects.filter(driver=Service.Driver.PROCESS):
        with service_lock(svc.pk, timeout=10):
            for inst in svc.instances.filter(state__in=Instance.LIVE_STATES, driver=Service.Driver.PROCESS):
                _stop(svc, inst, reason=f"console stopped ({component})")
                stopped += 1
            get_driver("process").remove_service(svc.spec())  # and any orphan
    return stopped


# --- converge from a request ----------------------------------------------------------------------
def converge_now(svc: Service, *, wait: bool) -> Status:
    """Converge right away (no need to wait for the controller's tick); with wait, keep going
    until running == desired or the deadline. An unreachable engine is a 503: the desired count
    is already recorded and the controller applies it once the engine is back.

    Every wait is bounded by the deadline (HMS_SCALE_WAIT_SECONDS), the per-service lock included:
    a controller stuck on a hanging engine must not hold the request past it."""
    deadline = time.monotonic() + settings.HMS_SCALE_WAIT_SECONDS
    while True:
        remaining = deadline - time.monotonic()
        try:
            # Without wait, one try: if another converger (the controller, a concurrent request)
            # holds the service, it or the next tick applies the new count; don't queue behind it.
            st = converge(svc.pk, component="web",
                                    lock_timeout=max(0.2, remaining) if wait else 0.0)
        except EngineUnavailable as exc:
            raise ApiError(503, "engine_unavailable",
                           f"The {svc.driver} engine is unreachable ({exc}). The desired count "
                           f"{svc.desired_instances} is recorded and will be applied when it is back.") from exc
        except LockTimeout:
            svc.refresh_from_db()
            st = status(svc)
        if not wait or st.converged or time.monotonic() > deadline:
            return st
        time.sleep(0.1)
