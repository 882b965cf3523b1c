"""Reconciliation: make what runs match the desired count. Called by the controller every tick
and by the web request right after a scale (so a scale converges without waiting for a tick).

Under the per-service lock, so two convergers never start duplicates. Instance rows are observed
state; only fail-over (an unrequested death) is an audited event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import requests
from django.db import transaction
from django.utils import timezone

from services import actions
from services.drivers import EngineUnavailable, get_driver
from services.drivers.base import Observed
from services.locks import service_lock
from services.models import Instance, Service

log = logging.getLogger(__name__)
HEALTH_TIMEOUT = 0.5


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
    if not inst.host or not inst.port:
        return False
    try:
        resp = requests.get(f"http://{inst.host}:{inst.port}{health_path}", timeout=HEALTH_TIMEOUT)
    except requests.RequestException:
        return False
    return resp.status_code == 200


def status(service: Service) -> Status:
    counts = {s: 0 for s in Instance.State}
    for state in service.instances.filter(state__in=Instance.LIVE_STATES).values_list("state", flat=True):
        counts[state] += 1
    backing_off = bool(service.backoff_until and service.backoff_until > timezone.now())
    return Status(service.desired_instances, counts[Instance.State.RUNNING], counts[Instance.State.STARTING],
                  backing_off)


def converge(service_id: int, *, component: str = "controller") -> Status:
    svc = Service.objects.get(pk=service_id)
    with service_lock(svc.name):
        svc.refresh_from_db()
        driver = get_driver(svc.driver)
        spec = svc.spec()
        observed = {o.ref: o for o in driver.list_instances(spec)}  # may raise EngineUnavailable
        live = list(svc.instances.filter(state__in=Instance.LIVE_STATES).order_by("id"))
        # Instances of another driver (the service's driver was changed) are gone from this view:
        # stop them through their own driver.
        _retire_other_drivers(svc, live)
        live = [i for i in live if i.driver == svc.driver]

        # 1. Deaths: a live row the engine no longer shows alive is a fail-over.
        known_refs = set()
        survivors: list[Instance] = []
        for inst in live:
            obs = observed.get(inst.ref)
            known_refs.add(inst.ref)
            if inst.ref and (obs is None or not obs.alive):
                cause = f"{svc.driver} instance {inst.ref} " + (obs.detail if obs and obs.detail else "disappeared")
                actions.record_failover(inst, cause=cause, component=component)
                if obs is not None and not obs.alive and not driver.declarative:
                    driver.stop_instance(spec, inst.ref, grace_seconds=0.5)  # reap / remove the carcass
                continue
            if obs is not None:
                _refresh(inst, obs)
            survivors.append(inst)

        # 2. Orphans: alive on the engine but not ours any more (e.g. a row lost to a rollback).
        if not driver.declarative:
            for ref, obs in observed.items():
                if ref not in known_refs and obs.alive:
                    log.warning("stopping orphan %s instance %s of %s", svc.driver, ref, svc.name)
                    driver.stop_instance(spec, ref, grace_seconds=2.0)

        # 3. Health of starting instances.
        for inst in survivors:
            if inst.state == Instance.State.STARTING and _healthy(inst, svc.health_path):
                now = timezone.now()
                Instance.objects.filter(pk=inst.pk).update(state=Instance.State.RUNNING,
                                                           health=Instance.Health.UP, healthy_at=now)
                inst.state = Instance.State.RUNNING

        # 4. Count up or down (newest first), rolling outdated specs over one at a time.
        _scale_to_desired(svc, driver, spec, survivors)
        svc.refresh_from_db()
        return status(svc)


def _refresh(inst: Instance, obs: Observed) -> None:
    changed = {}
    for name in ("cpu_percent", "memory_bytes"):
        value = getattr(obs, name)
        if value is not None and value != getattr(inst, name):
            changed[name] = value
    if obs.node and obs.node != inst.node:
        changed["node"] = obs.node
    if changed:
        Instance.objects.filter(pk=inst.pk).update(**changed)


def _retire_other_drivers(svc: Service, live: list[Instance]) -> None:
    for inst in live:
        if inst.driver != svc.driver:
            _stop(svc, inst, reason=f"driver changed to {svc.driver}")


def _scale_to_desired(svc: Service, driver, spec, survivors: list[Instance]) -> None:
    desired = svc.desired_instances
    now = timezone.now()
    backing_off = bool(svc.backoff_until and svc.backoff_until > now)
    if driver.declarative:
        driver.set_replicas(spec, desired)
        return
    current = [i for i in survivors if i.spec_version == svc.spec_version]
    outdated = [i for i in survivors if i.spec_version != svc.spec_version]
    # Roll over: surge one new-spec instance, and retire an outdated one only once every
    # current-spec instance is healthy, so capacity never drops during a rollout.
    if outdated:
        if any(i.state == Instance.State.STARTING for i in current):
            return
        if len(current) < desired and not backing_off:
            _start(svc, driver, spec)
            return
        _stop(svc, outdated[-1], reason="rolled over to a new spec")
        return
    missing = desired - len(current)
    if missing > 0 and not backing_off:
        for _ in range(missing):
            _start(svc, driver, spec)
    elif missing < 0:
        for inst in sorted(current, key=lambda i: i.id, reverse=True)[: -missing]:
            _stop(svc, inst, reason="scaled down")


def _start(svc: Service, driver, spec) -> Instance:
    with transaction.atomic():
        inst = Instance.objects.create(service=svc, driver=svc.driver, spec_version=svc.spec_version,
                                       restarts=_restarts_so_far(svc))
    try:
        obs = driver.start_instance(spec, inst.pk)
    except Exception as exc:
        Instance.objects.filter(pk=inst.pk).update(state=Instance.State.EXITED, exit_reason=str(exc)[:300],
                                                   stopped_at=timezone.now())
        if isinstance(exc, EngineUnavailable):
            raise
        log.error("cannot start %s: %s", svc.name, exc)
        return inst
    Instance.objects.filter(pk=inst.pk).update(ref=obs.ref, host=obs.host, port=obs.port, node=obs.node,
                                               started_at=obs.started_at or timezone.now())
    inst.refresh_from_db()
    return inst


def _restarts_so_far(svc: Service) -> int:
    """Replacements inherit the count of earlier unrequested deaths, so the table shows churn."""
    return svc.instances.filter(state=Instance.State.EXITED).count()


def _stop(svc: Service, inst: Instance, *, reason: str) -> None:
    Instance.objects.filter(pk=inst.pk).update(state=Instance.State.STOPPING)
    try:
        if inst.ref:
            get_driver(inst.driver).stop_instance(svc.spec(), inst.ref, grace_seconds=5.0)
    except Exception:
        # Not stopped (engine away?): keep it live so the next tick tries again.
        Instance.objects.filter(pk=inst.pk).update(state=inst.state)
        raise
    Instance.objects.filter(pk=inst.pk).update(state=Instance.State.STOPPED, exit_reason=reason,
                                                   stopped_at=timezone.now(), health=Instance.Health.UNKNOWN)


def stop_local_instances(*, component: str) -> int:
    """Stop every process-driver instance on this host (the console is shutting down); the
    desired counts stay, so the next start brings them back."""
    stopped = 0
    for svc in Service.objects.filter(driver=Service.Driver.PROCESS):
        with service_lock(svc.name, timeout=10):
            for inst in svc.instances.filter(state__in=Instance.LIVE_STATES, driver=Service.Driver.PROCESS):
                _stop(svc, inst, reason=f"console stopped ({component})")
                stopped += 1
            get_driver("process").remove_service(svc.spec())  # and any orphan
    return stopped
