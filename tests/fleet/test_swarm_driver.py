"""The swarm driver on a real single-node swarm: one Swarm service per Service, replicas set by
scale, tasks mirrored as instances (node, address, state, since), Swarm's own restart audited as a
fail-over."""

from __future__ import annotations

import pytest
import requests
from django.conf import settings

from audit.models import AuditEntry
from fleet import actions, reconcile
from fleet.drivers import get_driver
from fleet.drivers.process import console_namespace
from fleet.models import Instance, Service
from tests.conftest import api, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


def running_tasks(client, name: str) -> list[dict]:  # type: ignore[no-untyped-def]
    services = client.api.services(filters={"label": [
        "hmsmgmt.managed=true", f"hmsmgmt.namespace={console_namespace()}", f"hmsmgmt.service={name}"]})
    if not services:
        return []
    (svc,) = services
    return [t for t in client.api.tasks(filters={"service": svc["ID"], "desired-state": "running"})
            if t["Status"]["State"] == "running"]


@pytest.fixture
def swarm_demo(demo, docker_cleanup):  # type: ignore[no-untyped-def]
    svc = Service.objects.get(name="HMS-SVC")
    before = {"driver": svc.driver}
    svc.driver, svc.image = Service.Driver.SWARM, settings.HMS_SAMPLE_IMAGE
    actions.save_service(svc, actor="system:test", created=False, before=before)
    return docker_cleanup


def test_scale_to_three_runs_three_tasks_then_a_killed_task_is_restarted_by_swarm(client, tokens, swarm_demo):
    resp = api(client, "POST", "/mgmt/scale", {"service": "HMS-SVC", "instances": 3, "wait": True},
               token=tokens["alice"])
    assert resp.status_code == 200, resp.content
    assert resp.json()["running"] == 3 and resp.json()["converged"]
    tasks = running_tasks(swarm_demo, "HMS-SVC")
    assert len(tasks) == 3
    (swarm_service,) = swarm_demo.api.services(filters={"label": f"hmsmgmt.namespace={console_namespace()}"})
    assert swarm_service["Spec"]["Labels"]["hmsmgmt.managed"] == "true"
    assert swarm_service["Spec"]["Mode"]["Replicated"]["Replicas"] == 3

    rows = list(Instance.objects.filter(service__name="HMS-SVC", state=Instance.State.RUNNING))
    assert {i.ref for i in rows} == {t["ID"][:12] for t in tasks}
    node = swarm_demo.info()["Name"]
    for inst in rows:
        assert inst.driver == "swarm" and inst.node == node and inst.started_at is not None
        assert requests.get(f"http://{inst.host}:{inst.port}/health", timeout=2).json()["status"] == "ok"

    # Kill one task's container: Swarm restarts the task itself; we audit the fail-over.
    victim = rows[0]
    (task,) = [t for t in tasks if t["ID"].startswith(victim.ref)]
    swarm_demo.api.kill(task["Status"]["ContainerStatus"]["ContainerID"])
    svc = Service.objects.get(name="HMS-SVC")

    def victim_failed() -> bool:
        reconcile.converge(svc.pk, component="test")
        return Instance.objects.get(pk=victim.pk).state == Instance.State.EXITED

    wait_for(victim_failed, timeout=15, interval=0.2, message="the killed task seen as failed")
    entry = AuditEntry.objects.filter(action="failover", target_id=str(svc.pk)).latest("id")
    assert entry.payload["ref"] == victim.ref and "failed" in entry.payload["cause"]
    wait_for(lambda: reconcile.converge(svc.pk, component="test").running == 3, timeout=40, interval=0.3,
             message="Swarm's replacement task running and healthy")
    assert len(running_tasks(swarm_demo, "HMS-SVC")) == 3

    resp = api(client, "POST", "/mgmt/scale", {"service": "HMS-SVC", "instances": 0, "wait": True},
               token=tokens["alice"])
    assert resp.json()["running"] == 0
    wait_for(lambda: not running_tasks(swarm_demo, "HMS-SVC"), timeout=20, message="no running task")
    assert not Instance.objects.filter(service__name="HMS-SVC", state__in=Instance.LIVE_STATES).exists()


def test_spec_change_is_rolled_by_swarm_one_task_at_a_time(swarm_demo):
    svc = Service.objects.get(name="HMS-SVC")
    actions.scale_service(svc, 2, actor="system:test")
    wait_for(lambda: reconcile.converge(svc.pk, component="test").converged, timeout=30, message="2 tasks")
    swarm_demo.api.tag(settings.HMS_SAMPLE_IMAGE, "hmsmgmt/sample", "rollover")
    svc.refresh_from_db()  # save_service writes every field: never from a stale copy
    before = {"image": svc.image}
    svc.image = "hmsmgmt/sample:rollover"
    actions.save_service(svc, actor="system:test", created=False, before=before)

    def rolled() -> bool:
        reconcile.converge(svc.pk, component="test")
        live = Instance.objects.filter(service=svc, state=Instance.State.RUNNING)
        return live.count() == 2 and all(i.spec_version == svc.spec_version for i in live)

    wait_for(rolled, timeout=60, interval=0.3, message="both tasks on the new spec")
    (swarm_service,) = swarm_demo.api.services(filters={"label": f"hmsmgmt.namespace={console_namespace()}"})
    assert swarm_service["Spec"]["UpdateConfig"]["Parallelism"] == 1
    assert swarm_service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].startswith("hmsmgmt/sample:rollover")
    get_driver("swarm").remove_service(svc.spec())


def test_the_tick_lists_swarm_once_and_skips_a_converged_service(swarm_demo):  # type: ignore[no-untyped-def]
    from fleet import jobs

    svc = Service.objects.get(name="HMS-SVC")
    actions.scale_service(svc, 1, actor="system:test")
    tick = jobs.Reconciler()
    wait_for(lambda: (tick() or True) and svc.instances.filter(state=Instance.State.RUNNING).count() == 1,
             timeout=40, interval=0.3, message="one running task mirrored")
    tick()
    assert tick.last_pass["converged"] == 0  # every service, the Swarm one included, is at rest
    (task,) = running_tasks(swarm_demo, "HMS-SVC")
    swarm_demo.api.kill(task["Status"]["ContainerStatus"]["ContainerID"])
    wait_for(lambda: (tick() or True) and AuditEntry.objects.filter(action="failover").exists(),
             timeout=15, interval=0.2, message="the killed task noticed by the tick")
    assert AuditEntry.objects.filter(action="failover").latest("id").payload["ref"] == task["ID"][:12]
