"""Scaling on the process driver starts and stops real OS processes of the sample service."""

from __future__ import annotations

import os

import pytest
import requests

from fleet import reconcile
from fleet.drivers.process import ProcessDriver, exited
from fleet.models import Instance, Service
from fleet.reconcile import stop_local_instances as shutdown_local
from tests.conftest import api

pytestmark = pytest.mark.django_db


def _live_pids(name: str) -> list[int]:
    svc = Service.objects.get(name=name)
    return [int(o.ref) for o in ProcessDriver().list_instances(svc.spec()) if o.alive]


def test_scale_to_three_then_zero_leaves_exactly_that_many_processes(
    client, personas, tokens, demo, stop_local_instances
):
    resp = api(client, "POST", "/mgmt/scale", {"service": "HMS-SVC", "instances": 3, "wait": True},
               token=tokens["alice"])
    assert resp.status_code == 200, resp.content
    assert resp.json()["running"] == 3
    pids = _live_pids("HMS-SVC")
    assert len(pids) == 3
    for inst in Instance.objects.filter(service__name="HMS-SVC", state=Instance.State.RUNNING):
        health = requests.get(f"http://{inst.host}:{inst.port}/health", timeout=2)
        assert health.status_code == 200 and health.json()["instance"] == str(inst.pk)
        assert int(inst.ref) in pids

    resp = api(client, "POST", "/mgmt/scale", {"service": "HMS-SVC", "instances": 1, "wait": True},
               token=tokens["alice"])
    assert resp.json()["running"] == 1
    survivors = _live_pids("HMS-SVC")
    assert len(survivors) == 1
    # Newest instances are stopped first: the oldest one survives.
    assert survivors[0] == min(pids, key=lambda p: Instance.objects.get(ref=str(p)).pk)

    resp = api(client, "POST", "/mgmt/scale", {"service": "HMS-SVC", "instances": 0, "wait": True},
               token=tokens["alice"])
    assert resp.json()["running"] == 0
    assert _live_pids("HMS-SVC") == []
    for pid in pids:
        assert exited(pid)


def test_scaling_again_to_the_same_count_starts_nothing_new(client, personas, tokens, demo, stop_local_instances):
    api(client, "POST", "/mgmt/scale", {"service": "HMS-API", "instances": 2, "wait": True}, token=tokens["alice"])
    first = sorted(_live_pids("HMS-API"))
    api(client, "POST", "/mgmt/scale", {"service": "HMS-API", "instances": 2, "wait": True}, token=tokens["alice"])
    assert sorted(_live_pids("HMS-API")) == first


def test_console_shutdown_stops_instances_but_keeps_desired(client, personas, tokens, demo, stop_local_instances):
    api(client, "POST", "/mgmt/scale", {"service": "analytics", "instances": 2, "wait": True}, token=tokens["alice"])
    assert len(_live_pids("analytics")) == 2
    assert shutdown_local(component="test") == 2
    assert _live_pids("analytics") == []
    assert Service.objects.get(name="analytics").desired_instances == 2
    assert not Instance.objects.filter(service__name="analytics", state__in=Instance.LIVE_STATES).exists()


def test_instances_report_cpu_and_memory(client, personas, tokens, demo, stop_local_instances):
    resp = api(client, "POST", "/mgmt/scale", {"service": "HMS-SVC", "instances": 1, "wait": True},
               token=tokens["alice"])
    assert resp.json()["running"] == 1
    spec = Service.objects.get(name="HMS-SVC").spec()
    driver = ProcessDriver()
    first = [o for o in driver.list_instances(spec) if o.alive]
    inst = Instance.objects.get(service__name="HMS-SVC", state=Instance.State.RUNNING)
    for _ in range(20):  # some CPU to see: the sample answers /work with simulated work
        requests.get(f"http://{inst.host}:{inst.port}/health", timeout=2)
    second = [o for o in driver.list_instances(spec) if o.alive]
    assert len(first) == len(second) == 1
    for obs in (first[0], second[0]):
        assert obs.cpu_percent is not None and 0 <= obs.cpu_percent <= 100 * (os.cpu_count() or 1)
        # A Python interpreter: more than a megabyte resident, less than a gigabyte.
        assert obs.memory_bytes is not None and 1 << 20 < obs.memory_bytes < 1 << 30
    reconcile.converge(inst.service_id, component="test")
    inst.refresh_from_db()
    assert inst.memory_bytes and inst.cpu_percent is not None  # what the page and GET /mgmt/services/… show
