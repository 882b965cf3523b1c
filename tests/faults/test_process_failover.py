"""kill -9 of a process-driver instance: the real controller process replaces it and audits the
fail-over with its cause; the replacement answers /health."""

from __future__ import annotations

import os
import signal

import pytest
import requests

from audit.models import AuditEntry
from fleet.drivers.process import ProcessDriver
from fleet.models import Instance, Service
from tests.conftest import api, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def test_kill_9_of_a_process_instance_is_replaced_and_audited(client, tokens, demo, spawn, stop_local_instances):
    resp = api(client, "POST", "/mgmt/scale", {"service": "HMS-API", "instances": 2, "wait": True},
               token=tokens["alice"])
    assert resp.status_code == 200 and resp.json()["running"] == 2, resp.content
    svc = Service.objects.get(name="HMS-API")
    controller = spawn("controller")
    victim = Instance.objects.filter(service=svc, state=Instance.State.RUNNING).order_by("id").first()
    os.kill(int(victim.ref), signal.SIGKILL)

    def replaced() -> bool:
        running = Instance.objects.filter(service=svc, state=Instance.State.RUNNING)
        return running.count() == 2 and victim.pk not in {i.pk for i in running}

    wait_for(replaced, timeout=30, interval=0.1, message="a healthy replacement")
    victim.refresh_from_db()
    assert victim.state == Instance.State.EXITED
    entry = AuditEntry.objects.get(action="failover", target_id=str(svc.pk))
    assert entry.actor == "system:controller" and entry.payload["ref"] == victim.ref
    assert f"process instance {victim.ref}" in entry.payload["cause"]
    def two_live_processes() -> bool:
        alive = [o for o in ProcessDriver().list_instances(svc.spec()) if o.alive]
        return len(alive) == 2 and victim.ref not in {o.ref for o in alive}

    # Bounded: once in several batch runs the listing showed one live process for a moment after
    # the rows said two were running (not reproduced alone; see the session notes). Two, without
    # the victim, must hold within seconds all the same.
    wait_for(two_live_processes, timeout=10, interval=0.1,
             message=f"two live processes; rows: {list(svc.instances.values_list('id', 'ref', 'state'))}")
    for inst in Instance.objects.filter(service=svc, state=Instance.State.RUNNING):
        assert requests.get(f"http://{inst.host}:{inst.port}/health", timeout=2).json()["instance"] == str(inst.pk)
    # A death after a healthy life is not a crash loop.
    svc.refresh_from_db()
    assert svc.backoff_until is None
    assert "Traceback" not in controller.output()
