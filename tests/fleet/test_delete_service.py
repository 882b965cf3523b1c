"""Deleting a service also stops what it runs on its engine (no orphaned processes)."""

from __future__ import annotations

import pytest

from audit.models import AuditEntry
from fleet import actions
from fleet.drivers.process import ProcessDriver, exited
from fleet.models import Instance, Service
from tests.conftest import api, wait_for

pytestmark = pytest.mark.django_db(transaction=True)  # the engine removal runs on commit


def test_deleting_a_service_stops_its_processes_and_is_audited(client, personas, tokens, demo,
                                                                stop_local_instances):
    resp = api(client, "POST", "/mgmt/scale", {"service": "HMS-API", "instances": 2, "wait": True},
               token=tokens["alice"])
    assert resp.status_code == 200 and resp.json()["running"] == 2
    svc = Service.objects.get(name="HMS-API")
    spec = svc.spec()
    pids = [int(o.ref) for o in ProcessDriver().list_instances(spec) if o.alive]
    assert len(pids) == 2

    actions.delete_service(svc, actor=personas["alice"])

    assert not Service.objects.filter(name="HMS-API").exists()
    assert not Instance.objects.filter(ref__in=[str(p) for p in pids]).exists()
    assert [o for o in ProcessDriver().list_instances(spec) if o.alive] == []

    wait_for(lambda: all(exited(p) for p in pids), timeout=10, message="processes stopped")
    entry = AuditEntry.objects.filter(action="service.delete").latest("pk")
    assert entry.payload == {"name": "HMS-API", "engines": ["process"]} and entry.actor == "alice"
