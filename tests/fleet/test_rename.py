"""Renaming a service orphans nothing (issue 14): the engines track a service by its id (process
environment marker, container and Swarm labels), so the same instances stay managed, no duplicate
starts, and its bounds policy (which refers to the service, not its name) still applies."""

from __future__ import annotations

import pytest
from django.conf import settings

from audit.models import AuditEntry
from fleet import actions, jobs, reconcile
from fleet.drivers import get_driver
from fleet.drivers.process import console_namespace
from fleet.models import Instance, Service
from policies.models import Policy
from tests.conftest import service_with, wait_for


def _rename(svc: Service, new: str) -> Service:
    obj = Service.objects.get(pk=svc.pk)
    old = obj.name
    obj.name = new
    actions.save_service(obj, actor="system:test", created=False, before={"name": old})
    return Service.objects.get(pk=svc.pk)


def _live(svc: Service) -> list[tuple[int, str]]:
    return sorted(svc.instances.filter(state__in=Instance.LIVE_STATES).values_list("id", "ref"))


def _bounded(svc: Service, most: int) -> None:
    Policy.objects.create(name=f"{svc.name} bounds", kind=Policy.Kind.INSTANCE_BOUNDS, service=svc,
                          max_instances=most)


def _policy_still_applies(svc: Service, most: int) -> None:
    outcome = actions.scale_service(svc, most + 1, actor="system:test")
    assert not outcome.decision.allowed and outcome.decision.status == 422
    assert f"may run at most {most}" in outcome.decision.detail
    assert Service.objects.get(pk=svc.pk).desired_instances == most


def _converged(svc: Service, count: int, timeout: float = 40) -> list[tuple[int, str]]:
    tick = jobs.Reconciler()
    wait_for(lambda: (tick() or True) and svc.instances.filter(state=Instance.State.RUNNING).count() == count
             and svc.instances.filter(state__in=Instance.LIVE_STATES).count() == count,
             timeout=timeout, interval=0.2, message=f"{count} running instances of {svc.name}")
    return _live(svc)


def _ticks_change_nothing(svc: Service, before: list[tuple[int, str]], ticks: int = 6) -> None:
    tick = jobs.Reconciler()
    rows = Instance.objects.count()
    for _ in range(ticks):
        tick()
    assert _live(svc) == before  # the same rows, with the same engine refs, still live
    assert Instance.objects.count() == rows  # no replacement, no duplicate started
    assert not AuditEntry.objects.filter(action="failover").exists()


@pytest.mark.django_db(transaction=True)
def test_renamed_process_service_keeps_its_processes_and_policies(stop_local_instances) -> None:
    svc = service_with("renamable")
    _bounded(svc, 2)
    actions.scale_service(svc, 2, actor="system:test")
    before = _converged(svc, 2)
    svc = _rename(svc, "renamed")
    _ticks_change_nothing(svc, before)
    listed = get_driver("process").list_all({svc.name: svc.spec()})[svc.name]
    assert sorted(int(o.ref) for o in listed if o.alive) == sorted(int(ref) for _, ref in before)
    # And the old name finds nothing: a new service created under it gets none of them.
    other = service_with("renamable")
    assert get_driver("process").list_instances(other.spec()) == []
    _policy_still_applies(svc, 2)
    assert Policy.objects.get(name="renamable bounds").service_id == svc.pk
    # Scaling down still stops the very processes it started.
    actions.scale_service(svc, 0, actor="system:test")
    _converged(svc, 0)
    assert [o for o in get_driver("process").list_instances(svc.spec()) if o.alive] == []


def _ours(client, kind: str) -> list[dict]:  # type: ignore[no-untyped-def]
    selector = {"label": ["hmsmgmt.managed=true", f"hmsmgmt.namespace={console_namespace()}"]}
    if kind == "containers":
        return [c for c in client.api.containers(all=True, filters=selector)
                if "com.docker.swarm.task.id" not in (c.get("Labels") or {})]
    return client.api.services(filters=selector)


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_renamed_docker_service_keeps_its_containers_and_policies(docker_cleanup) -> None:
    svc = service_with("dock-old", driver=Service.Driver.DOCKER, image=settings.HMS_SAMPLE_IMAGE, command="")
    _bounded(svc, 2)
    actions.scale_service(svc, 2, actor="system:test")
    before = _converged(svc, 2)
    containers = sorted(c["Id"][:12] for c in _ours(docker_cleanup, "containers"))
    assert containers == sorted(ref for _, ref in before)
    assert {c["Labels"]["hmsmgmt.service_id"] for c in _ours(docker_cleanup, "containers")} == {str(svc.pk)}
    svc = _rename(svc, "dock-new")
    _ticks_change_nothing(svc, before)
    assert sorted(c["Id"][:12] for c in _ours(docker_cleanup, "containers")) == containers
    _policy_still_applies(svc, 2)


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_renamed_swarm_service_keeps_its_swarm_service_and_policies(docker_cleanup) -> None:
    svc = service_with("swarm-old", driver=Service.Driver.SWARM, image=settings.HMS_SAMPLE_IMAGE, command="")
    _bounded(svc, 1)
    actions.scale_service(svc, 1, actor="system:test")
    before = _converged(svc, 1, timeout=60)
    (swarm_service,) = _ours(docker_cleanup, "services")
    svc = _rename(svc, "swarm-new")
    _ticks_change_nothing(svc, before)
    (after,) = _ours(docker_cleanup, "services")  # the same Swarm service: none created beside it
    assert after["ID"] == swarm_service["ID"]
    assert after["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
    _policy_still_applies(svc, 1)
    reconcile.converge(svc.pk, component="test")
    assert len(_ours(docker_cleanup, "services")) == 1
