"""The demo flows end to end: reportingFlow (ingest → validation → reporting) and the fan-out /
fan-in fanOutReport, started through the REST API, run by a real qcluster against real
sample-service instances (process driver) that the real controller brings up."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.conftest import api, wait_for
from workflows.models import StepRun, WorkflowRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def test_reporting_and_fan_out_flows_succeed_on_real_instances(demo_fleet) -> None:
    alice = User.objects.create_superuser("alice", "alice@example.org", "pw-alice-123")
    cluster = demo_fleet
    client = Client()
    client.force_login(alice)
    ids = {}
    for flow in ("reportingFlow", "fanOutReport"):
        resp = api(client, "POST", "/mgmt/workflows", {"flowId": flow, "data": {"dataset": "q4"}})
        assert resp.status_code == 200, resp.content
        ids[flow] = resp.json()["runId"]

    def finished() -> bool:
        return not WorkflowRun.objects.filter(pk__in=ids.values(), status__in=WorkflowRun.ACTIVE).exists()

    try:
        wait_for(finished, timeout=90, interval=0.2, message="both runs to finish")
    except AssertionError:
        raise AssertionError(f"{list(StepRun.objects.values_list('name', 'status', 'error'))}\n"
                             f"{cluster.output()[-3000:]}") from None
    for flow, run_id in ids.items():
        body = api(client, "GET", f"/mgmt/workflows/{run_id}").json()
        assert body["status"] == "succeeded", (flow, body)
        for s in body["steps"]:
            assert s["output"]["status"] == 200
            assert s["output"]["response"]["idempotencyKey"] == f"run-{run_id}/{s['name']}"
    fan = {s.name: s for s in StepRun.objects.filter(run_id=ids["fanOutReport"])}
    branches = [fan[n] for n in ("stats_visits", "stats_billing", "stats_labs")]
    assert all(b.started_at >= fan["extract"].finished_at for b in branches)
    assert fan["merge"].started_at >= max(b.finished_at for b in branches)  # fan-in waited for all three
