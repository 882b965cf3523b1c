"""The docker driver on a real engine: one labelled container per instance, ports on 127.0.0.1,
scale through the REST API, orphans removed, stats reported."""

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


def labelled(client, name: str, *, all_states: bool = False) -> list[dict]:  # type: ignore[no-untyped-def]
    return client.api.containers(
        all=all_states,
        filters={
            "label": ["hmsmgmt.managed=true", f"hmsmgmt.namespace={console_namespace()}", f"hmsmgmt.service={name}"]
        },
    )


@pytest.fixture
def docker_demo(demo, docker_cleanup):  # type: ignore[no-untyped-def]
    for svc in Service.objects.all():
        before = {"driver": svc.driver}
        svc.driver = Service.Driver.DOCKER
        svc.image = settings.HMS_SAMPLE_IMAGE
        actions.save_service(svc, actor="system:test", created=False, before=before)
    return docker_cleanup


def test_scale_to_three_leaves_exactly_three_labelled_containers(client, clients, tokens, docker_demo):
    resp = api(
        client, "POST", "/mgmt/scale", {"service": "HMS-SVC", "instances": 3, "wait": True}, token=tokens["alice"]
    )
    assert resp.status_code == 200, resp.content
    assert resp.json()["running"] == 3 and resp.json()["converged"]
    containers = labelled(docker_demo, "HMS-SVC", all_states=True)
    assert len(containers) == 3
    rows = {i.ref: i for i in Instance.objects.filter(service__name="HMS-SVC", state=Instance.State.RUNNING)}
    assert len(rows) == 3
    for c in containers:
        assert c["State"] == "running"
        labels = c["Labels"]
        assert labels["hmsmgmt.managed"] == "true" and labels["hmsmgmt.service"] == "HMS-SVC"
        inst = rows[c["Id"][:12]]
        assert labels["hmsmgmt.instance"] == str(inst.pk)
        (port,) = [p for p in c["Ports"] if p.get("PublicPort")]
        assert port["IP"] == "127.0.0.1" and port["PublicPort"] == inst.port
        body = requests.get(f"http://127.0.0.1:{inst.port}/health", timeout=2).json()
        assert body == {"status": "ok", "service": "HMS-SVC", "instance": str(inst.pk)}

    # The service page's live table (the htmx partial) shows each container with node and address.
    partial = clients["alice"].get("/services/HMS-SVC/", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in partial
    for inst in rows.values():
        assert inst.ref[:11] in partial and f"127.0.0.1:{inst.port}" in partial and inst.node in partial

    # Scale down removes the newest first, with a graceful stop, and leaves no stopped carcass.
    oldest = min(rows.values(), key=lambda i: i.pk)
    resp = api(
        client, "POST", "/mgmt/scale", {"service": "HMS-SVC", "instances": 1, "wait": True}, token=tokens["alice"]
    )
    assert resp.json()["running"] == 1
    remaining = labelled(docker_demo, "HMS-SVC", all_states=True)
    assert [c["Id"][:12] for c in remaining] == [oldest.ref]
    stopped = Instance.objects.filter(service__name="HMS-SVC", state=Instance.State.STOPPED)
    assert {i.exit_reason for i in stopped} == {"scaled down"}


def test_work_endpoint_of_the_image_takes_query_and_json(docker_demo, client, tokens):
    api(client, "POST", "/mgmt/scale", {"service": "HMS-API", "instances": 1, "wait": True}, token=tokens["alice"])
    inst = Instance.objects.get(service__name="HMS-API", state=Instance.State.RUNNING)
    base = f"http://127.0.0.1:{inst.port}"
    assert requests.post(f"{base}/work", json={"ms": 30}, timeout=5).json()["ms"] == 30
    assert requests.get(f"{base}/work?ms=5&fail=1", timeout=5).status_code == 500
    assert requests.post(f"{base}/fault", json={"mode": "fail"}, timeout=5).status_code == 200
    assert requests.get(f"{base}/health", timeout=5).status_code == 503
    assert requests.get(f"{base}/nope", timeout=5).status_code == 404


def test_orphan_container_of_the_service_is_removed_and_stats_are_reported(docker_demo):
    svc = Service.objects.get(name="HMS-SVC")
    actions.scale_service(svc, 1, actor="system:test")
    wait_for(lambda: reconcile.converge(svc.pk, component="test").converged, timeout=30, message="1 running")
    # A container of this service that no row claims (say, started before a rollback).
    driver = get_driver("docker")
    orphan = driver.start_instance(svc.spec(), 999_999)
    assert len(labelled(docker_demo, "HMS-SVC")) == 2
    reconcile.converge(svc.pk, component="test")
    assert [c["Id"][:12] for c in labelled(docker_demo, "HMS-SVC", all_states=True)] != [orphan.ref]
    assert len(labelled(docker_demo, "HMS-SVC", all_states=True)) == 1

    # CPU needs two samples (HMS_DOCKER_STATS_SECONDS apart); memory comes with the first.
    inst = Instance.objects.get(service=svc, state=Instance.State.RUNNING)
    wait_for(
        lambda: reconcile.converge(svc.pk) and Instance.objects.get(pk=inst.pk).memory_bytes,
        timeout=15,
        interval=0.5,
        message="memory reported",
    )
    assert Instance.objects.get(pk=inst.pk).memory_bytes > 0


def test_a_missing_image_is_refused_and_backs_off_instead_of_hammering(docker_demo):
    svc = Service.objects.get(name="analytics")
    before = {"image": svc.image}
    svc.image = "hmsmgmt/does-not-exist:1"
    actions.save_service(svc, actor="system:test", created=False, before=before)
    actions.scale_service(svc, 1, actor="system:test")
    for _ in range(3):
        reconcile.converge(svc.pk, component="test")
    svc.refresh_from_db()
    assert labelled(docker_demo, "analytics", all_states=True) == []
    failed = Instance.objects.filter(service=svc, state=Instance.State.EXITED)
    assert failed.exists() and "not on the engine" in failed.first().exit_reason
    assert svc.failure_streak >= 2 and reconcile.status(svc).backing_off
    # Backing off: further ticks start nothing new.
    count = failed.count()
    reconcile.converge(svc.pk, component="test")
    assert Instance.objects.filter(service=svc).count() == count


def test_warm_spare_is_adopted_on_fail_over_and_replaced(docker_demo, monkeypatch):
    monkeypatch.setattr(reconcile, "WARM_SPARES", 1)
    svc = Service.objects.get(name="HMS-SVC")
    actions.scale_service(svc, 2, actor="system:test")

    def spares() -> list[dict]:
        # Spare = started as one and not (yet) claimed by an instance; labels outlive adoption.
        live = Instance.objects.filter(service=svc, state__in=Instance.LIVE_STATES)
        claimed = set(live.values_list("ref", flat=True))
        return [
            c
            for c in labelled(docker_demo, "HMS-SVC")
            if c["Labels"].get("hmsmgmt.role") == "spare" and c["Id"][:12] not in claimed
        ]

    wait_for(
        lambda: reconcile.converge(svc.pk, component="test").converged and len(spares()) == 1,
        timeout=30,
        message="2 running instances and 1 warm spare",
    )
    assert len(labelled(docker_demo, "HMS-SVC")) == 3
    (spare,) = spares()
    assert Instance.objects.filter(ref=spare["Id"][:12]).count() == 0  # not an instance yet

    victim = Instance.objects.filter(service=svc, state=Instance.State.RUNNING).first()
    docker_demo.api.kill(victim.ref)
    reconcile.converge(svc.pk, component="test")  # one pass: fail-over by adoption, then a new spare
    adopted = Instance.objects.get(ref=spare["Id"][:12])
    assert adopted.state == Instance.State.RUNNING and adopted.service_id == svc.pk
    assert Instance.objects.get(pk=victim.pk).state == Instance.State.EXITED
    assert AuditEntry.objects.filter(action="failover", target_id=str(svc.pk)).count() == 1
    (new_spare,) = spares()
    assert new_spare["Id"] != spare["Id"]
    assert len(labelled(docker_demo, "HMS-SVC", all_states=True)) == 3  # 2 instances + 1 spare, no carcass

    # Scaled to zero, the spare goes too.
    actions.scale_service(svc, 0, actor="system:test")
    wait_for(
        lambda: (
            reconcile.converge(svc.pk, component="test").converged
            and not labelled(docker_demo, "HMS-SVC", all_states=True)
        ),
        timeout=30,
        message="nothing left",
    )


# --- fail-over on the engine's death report (docker events) ----------------------------------------
def _fleet_of_two(svc: Service) -> list[Instance]:
    actions.scale_service(svc, 2, actor="system:test")
    wait_for(lambda: reconcile.converge(svc.pk, component="test").converged, timeout=30, message="2 running")
    return list(Instance.objects.filter(service=svc, state=Instance.State.RUNNING).order_by("pk"))


def test_reported_death_is_replaced_while_the_fail_over_is_recorded(docker_demo, monkeypatch):
    import time

    from django.utils import timezone

    from fleet.drivers.docker import DeathReports, watch_deaths

    svc = Service.objects.get(name="HMS-SVC")
    fleet = _fleet_of_two(svc)
    # Both lived past actions.EARLY_DEATH: a death now is not part of a crash loop.
    Instance.objects.filter(pk__in=[i.pk for i in fleet]).update(started_at=timezone.now() - actions.EARLY_DEATH * 6)
    driver = get_driver("docker")
    reports = DeathReports()  # this test's own, fed by its own watcher
    monkeypatch.setattr(driver, "deaths", reports)
    woken: list[str] = []
    watch_deaths(driver.engine, woken.append, driver="docker", reports=reports)
    time.sleep(1.0)  # the watcher subscribes to the event stream

    # The replacement is asked for before the fail-over is recorded, not after.
    seen_at_record: list[list[int]] = []
    record = actions.record_failover

    def spy(instance, **kwargs):  # type: ignore[no-untyped-def]
        seen_at_record.append(
            list(Instance.objects.filter(service=svc, pk__gt=fleet[-1].pk).values_list("pk", flat=True))
        )
        return record(instance, **kwargs)

    monkeypatch.setattr(actions, "record_failover", spy)
    victim = fleet[0]
    docker_demo.api.kill(victim.ref)
    wait_for(lambda: reports.get(victim.ref) and str(svc.pk) in woken, timeout=10, message="death reported")
    assert reports.get(victim.ref) == "exited with code 137, killed (SIGKILL)"

    status = reconcile.converge(svc.pk, component="test")  # the pass the controller runs on the report
    assert status.running == 2 and status.converged  # promoted in the same pass
    (new,) = Instance.objects.filter(service=svc, pk__gt=fleet[-1].pk)
    assert seen_at_record == [[new.pk]]
    assert new.state == Instance.State.RUNNING and new.restarts == 1
    dead = Instance.objects.get(pk=victim.pk)
    assert dead.state == Instance.State.EXITED
    assert dead.exit_reason == f"docker instance {victim.ref} exited with code 137, killed (SIGKILL)"
    (entry,) = AuditEntry.objects.filter(action="failover", target_id=str(svc.pk))
    assert entry.payload["cause"] == dead.exit_reason and entry.payload["failure_streak"] == 0
    # Exactly two labelled containers: the carcass is gone, and nothing was started twice.
    containers = labelled(docker_demo, "HMS-SVC", all_states=True)
    assert sorted(c["Id"][:12] for c in containers) == sorted([fleet[1].ref, new.ref])
    assert all(c["State"] == "running" for c in containers)
    assert requests.get(f"http://127.0.0.1:{new.port}/health", timeout=2).json()["instance"] == str(new.pk)


def test_reported_young_death_still_backs_off(docker_demo, monkeypatch):
    """A death within actions.EARLY_DEATH of its start takes the ordinary path: recorded first,
    and in a crash loop (second early death in a row) nothing is started."""
    from fleet.drivers.docker import DeathReports

    svc = Service.objects.get(name="HMS-SVC")
    fleet = _fleet_of_two(svc)
    Service.objects.filter(pk=svc.pk).update(failure_streak=1)  # one early death already
    driver = get_driver("docker")
    reports = DeathReports()
    monkeypatch.setattr(driver, "deaths", reports)
    victim = fleet[0]
    docker_demo.api.kill(victim.ref)
    info = docker_demo.api.inspect_container(victim.ref)
    reports.died(info["Id"], str(info["State"]["ExitCode"]))  # as the event stream reports it

    reconcile.converge(svc.pk, component="test")
    svc.refresh_from_db()
    assert svc.failure_streak == 2 and reconcile.status(svc).backing_off
    assert not Instance.objects.filter(service=svc, pk__gt=fleet[-1].pk).exists()  # nothing started
    assert [c["Id"][:12] for c in labelled(docker_demo, "HMS-SVC", all_states=True)] == [fleet[1].ref]
