"""REST: status, list with filters and pages, cancel, retry, approve - access and refusals."""

from __future__ import annotations

import pytest

from tests.conftest import api
from tests.workflows.helpers import drain, make_flow, py, step
from workflows import actions
from workflows.models import WorkflowRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def runs(personas, django_capture_on_commit_callbacks):
    flow = make_flow("gated", [step("gate", action="approval"), step("b", "gate")])
    failing = make_flow("failing", [py("a", "fail"), step("b", "a")])
    out = {}
    with django_capture_on_commit_callbacks(execute=True):
        out["gated"] = actions.start_run(flow, {}, actor=personas["bob"]).run
        out["failed"] = actions.start_run(failing, {}, actor=personas["bob"]).run
    drain(out["gated"])
    drain(out["failed"])
    return out


def test_get_run_shows_steps(clients, runs) -> None:
    resp = api(clients["alice"], "GET", f"/mgmt/workflows/{runs['gated'].pk}")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "running"
    assert [(s["name"], s["status"]) for s in body["steps"]] == [("gate", "waiting"), ("b", "pending")]


def test_list_filters_and_pages(clients, runs) -> None:
    body = api(clients["alice"], "GET", "/mgmt/workflows?status=failed").json()
    assert [r["runId"] for r in body["items"]] == [runs["failed"].pk]
    body = api(clients["alice"], "GET", "/mgmt/workflows?flowId=gated&per_page=1").json()
    assert body["count"] == 1 and body["pages"] == 1
    assert api(clients["alice"], "GET", "/mgmt/workflows?status=bogus").status_code == 400


def test_outsiders_see_nothing(clients, runs) -> None:
    assert api(clients["dave"], "GET", f"/mgmt/workflows/{runs['gated'].pk}").status_code == 404
    resp = api(clients["dave"], "POST", f"/mgmt/workflows/{runs['gated'].pk}/steps/gate/approve", {"approve": True})
    assert resp.status_code == 404
    assert api(clients["anon"], "POST", f"/mgmt/workflows/{runs['failed'].pk}/retry").status_code == 401


def test_approve_validates_its_body_and_the_step(clients, runs, django_capture_on_commit_callbacks) -> None:
    url = f"/mgmt/workflows/{runs['gated'].pk}/steps/gate/approve"
    resp = api(clients["alice"], "POST", url, {"approve": "yes"})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"
    assert api(clients["alice"], "POST", url, "{not json").status_code == 400
    resp = api(clients["alice"], "POST", f"/mgmt/workflows/{runs['gated'].pk}/steps/nope/approve", {"approve": True})
    assert resp.status_code == 404
    resp = api(clients["alice"], "POST", f"/mgmt/workflows/{runs['gated'].pk}/steps/b/approve", {"approve": True})
    assert resp.status_code == 409 and resp.json()["error"] == "not_waiting"
    with django_capture_on_commit_callbacks(execute=True):
        resp = api(clients["alice"], "POST", url, {"approve": False, "comment": "no"})
    assert resp.status_code == 200
    assert api(clients["alice"], "GET", f"/mgmt/workflows/{runs['gated'].pk}").json()["status"] == "failed"
    assert api(clients["alice"], "POST", url, {"approve": True}).status_code == 409  # decided already


def test_retry_only_a_failed_run(clients, runs, django_capture_on_commit_callbacks) -> None:
    resp = api(clients["alice"], "POST", f"/mgmt/workflows/{runs['gated'].pk}/retry")
    assert resp.status_code == 409 and resp.json()["error"] == "not_retryable"
    with django_capture_on_commit_callbacks(execute=True):
        resp = api(clients["alice"], "POST", f"/mgmt/workflows/{runs['failed'].pk}/retry")
    assert resp.status_code == 200 and resp.json()["status"] == "running"
    body = api(clients["alice"], "GET", f"/mgmt/workflows/{runs['failed'].pk}").json()
    assert {s["name"]: s["status"] for s in body["steps"]} == {"a": "queued", "b": "pending"}


def test_cancel_then_cancel_again_is_409(clients, runs) -> None:
    url = f"/mgmt/workflows/{runs['gated'].pk}/cancel"
    assert api(clients["alice"], "POST", url).json()["status"] == "cancelled"
    assert api(clients["alice"], "POST", url).status_code == 409
    assert WorkflowRun.objects.get(pk=runs["gated"].pk).steps.filter(status="cancelled").count() == 2


def test_a_retry_asks_the_run_quota_first(personas, demo, clients) -> None:
    from audit.models import AuditEntry

    carol = clients["carol"]
    first = api(carol, "POST", "/mgmt/workflows", {"flowId": "analyticsReport", "data": {"seconds": 60}}).json()
    assert api(carol, "POST", f"/mgmt/workflows/{first['runId']}/cancel").status_code == 200
    for _ in range(5):  # the demo policy: at most 5 concurrent analytics runs per user
        assert api(carol, "POST", "/mgmt/workflows", {"flowId": "analyticsReport"}).status_code == 200
    resp = api(carol, "POST", f"/mgmt/workflows/{first['runId']}/retry")
    assert resp.status_code == 429 and resp.json()["error"] == "policy_violation"
    assert WorkflowRun.objects.get(pk=first["runId"]).status == "cancelled"  # nothing changed
    denied = AuditEntry.objects.filter(action="workflow.retry", target_id=str(first["runId"])).get()
    assert denied.outcome == AuditEntry.Outcome.DENIED
