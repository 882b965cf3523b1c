"""The chapter's REST contract: POST /mgmt/scale and POST /mgmt/workflows, as mgmtClient.js calls
them (JSON body, Content-Type application/json) with an auth header added; and bad input."""

from __future__ import annotations

import json
import re

import pytest

from audit.models import AuditEntry
from fleet.models import Service
from tests.conftest import api
from workflows.models import StepRun, WorkflowRun

pytestmark = pytest.mark.django_db


def test_scale_sets_desired_and_writes_one_audit_entry(client, personas, tokens, demo, stop_local_instances):
    before = AuditEntry.objects.count()
    resp = api(client, "POST", "/mgmt/scale", {"service": "HMS-SVC", "instances": 1, "wait": True},
               token=tokens["alice"])
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["service"] == "HMS-SVC" and body["desired"] == 1 and body["running"] == 1
    assert Service.objects.get(name="HMS-SVC").desired_instances == 1
    entries = AuditEntry.objects.filter(id__gt=0).order_by("-id")[: AuditEntry.objects.count() - before]
    assert [e.action for e in entries] == ["scale"]
    assert entries[0].actor == "alice" and entries[0].payload == {"from": 0, "to": 1}


def test_workflow_start_answers_run_id_and_started(client, personas, tokens, demo):
    before = AuditEntry.objects.count()
    resp = api(client, "POST", "/mgmt/workflows", {"flowId": "exportPatientData", "data": {"user": 123}},
               token=tokens["alice"])
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["status"] == "started" and isinstance(body["runId"], int)
    run = WorkflowRun.objects.get(pk=body["runId"])
    assert run.data == {"user": 123} and run.actor.username == "alice"
    assert set(StepRun.objects.filter(run=run).values_list("name", flat=True)) == {"collect", "package"}
    assert AuditEntry.objects.count() == before + 1
    assert AuditEntry.objects.order_by("-id").first().action == "workflow.start"


def test_run_status_lists_steps(client, personas, tokens, demo):
    run_id = api(client, "POST", "/mgmt/workflows", {"flowId": "reportingFlow", "data": {}},
                 token=tokens["alice"]).json()["runId"]
    resp = api(client, "GET", f"/mgmt/workflows/{run_id}", token=tokens["alice"])
    assert resp.status_code == 200
    assert [s["name"] for s in resp.json()["steps"]] == ["ingest", "validation", "reporting"]


def test_services_list_and_detail(client, personas, tokens, demo):
    resp = api(client, "GET", "/mgmt/services", token=tokens["alice"])
    assert {s["name"] for s in resp.json()} == {"HMS-SVC", "HMS-API", "analytics"}
    detail = api(client, "GET", "/mgmt/services/HMS-API", token=tokens["alice"]).json()
    assert detail["desired"] == 0 and detail["running"] == 0 and detail["instances"] == []


def test_no_credentials_is_401(client, demo):
    for path, body in (("/mgmt/scale", {"service": "HMS-SVC", "instances": 1}),
                       ("/mgmt/workflows", {"flowId": "exportPatientData", "data": {}})):
        resp = api(client, "POST", path, body)
        assert resp.status_code == 401
        assert resp.json()["error"] == "unauthorized"


def test_bad_token_is_401(client, demo):
    resp = api(client, "POST", "/mgmt/scale", {"service": "HMS-SVC", "instances": 1}, token="hms_nope_nope")
    assert resp.status_code == 401


BAD_SCALE = [
    ("{not json", 400, "malformed_json"),
    ("[1, 2]", 400, "invalid_request"),
    ({"instances": 3}, 400, "invalid_request"),
    ({"service": "HMS-SVC"}, 400, "invalid_request"),
    ({"service": "HMS-SVC", "instances": "3"}, 400, "invalid_request"),
    ({"service": "HMS-SVC", "instances": 2.5}, 400, "invalid_request"),
    ({"service": "HMS-SVC", "instances": True}, 400, "invalid_request"),
    ({"service": "HMS-SVC", "instances": -1}, 400, "invalid_request"),
    ({"service": "HMS-SVC", "instances": 10**9}, 400, "invalid_request"),
    ({"service": 42, "instances": 1}, 400, "invalid_request"),
    ({"service": "no-such-service", "instances": 1}, 404, "not_found"),
]


@pytest.mark.parametrize("body,status,code", BAD_SCALE)
def test_bad_scale_input_is_rejected_and_changes_nothing(client, personas, tokens, demo, body, status, code):
    before = (AuditEntry.objects.count(), list(Service.objects.values_list("desired_instances", flat=True)))
    resp = api(client, "POST", "/mgmt/scale", body, token=tokens["alice"])
    assert resp.status_code == status, resp.content
    payload = resp.json()
    assert payload["error"] == code and payload["detail"]
    assert (AuditEntry.objects.count(), list(Service.objects.values_list("desired_instances", flat=True))) == before


BAD_WORKFLOW = [
    ("{", 400, "malformed_json"),
    ({"data": {}}, 400, "invalid_request"),
    ({"flowId": 7, "data": {}}, 400, "invalid_request"),
    ({"flowId": "exportPatientData", "data": [1, 2]}, 400, "invalid_request"),
    ({"flowId": "noSuchFlow", "data": {}}, 404, "not_found"),
]


@pytest.mark.parametrize("body,status,code", BAD_WORKFLOW)
def test_bad_workflow_input_is_rejected_and_changes_nothing(client, personas, tokens, demo, body, status, code):
    before = (AuditEntry.objects.count(), WorkflowRun.objects.count())
    resp = api(client, "POST", "/mgmt/workflows", body, token=tokens["alice"])
    assert resp.status_code == status, resp.content
    assert resp.json()["error"] == code
    assert (AuditEntry.objects.count(), WorkflowRun.objects.count()) == before


def test_oversize_body_is_413(client, personas, tokens, demo):
    big = json.dumps({"flowId": "exportPatientData", "data": {"blob": "x" * 200_000}})
    resp = api(client, "POST", "/mgmt/workflows", big, token=tokens["alice"])
    assert resp.status_code == 413 and resp.json()["error"] == "payload_too_large"
    assert WorkflowRun.objects.count() == 0


def test_unknown_run_is_404_json(client, personas, tokens):
    resp = api(client, "GET", "/mgmt/workflows/999999", token=tokens["alice"])
    assert resp.status_code == 404 and resp.json()["error"] == "not_found"


def test_session_write_needs_csrf(personas, demo):
    from django.test import Client

    c = Client(enforce_csrf_checks=True)
    c.force_login(personas["alice"])
    resp = api(c, "POST", "/mgmt/workflows", {"flowId": "exportPatientData", "data": {}})
    assert resp.status_code == 403
    c.get("/")  # sets the CSRF cookie
    token = c.cookies["csrftoken"].value
    resp = api(c, "POST", "/mgmt/workflows", {"flowId": "exportPatientData", "data": {}}, HTTP_X_CSRFTOKEN=token)
    assert resp.status_code == 200, resp.content


def test_quota_refusal_is_429_with_numbers(client, personas, tokens, demo):
    for _ in range(5):
        ok = api(client, "POST", "/mgmt/workflows", {"flowId": "analyticsReport", "data": {"seconds": 60}},
                 token=tokens["carol"])
        assert ok.status_code == 200, ok.content
    resp = api(client, "POST", "/mgmt/workflows", {"flowId": "analyticsReport", "data": {"seconds": 60}},
               token=tokens["carol"])
    assert resp.status_code == 429
    body = resp.json()
    assert body["error"] == "policy_violation" and body["limit"] == 5 and body["current"] == 5
    assert "carol" in body["detail"]
    denied = AuditEntry.objects.order_by("-id").first()
    assert denied.action == "workflow.start" and denied.outcome == "denied"


def test_openapi_and_docs_are_served(client, personas):
    spec = client.get("/mgmt/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert "/mgmt/scale" in paths and "/mgmt/workflows" in paths
    # The docs page is for signed-in people; anonymous callers are sent to the sign-in page.
    anon = client.get("/mgmt/docs")
    assert anon.status_code == 302 and anon["Location"] == "/login/?next=/mgmt/docs"
    client.force_login(personas["dave"])
    docs = client.get("/mgmt/docs")
    assert docs.status_code == 200
    # Swagger UI from the console itself: the docs page must work without internet access.
    html = docs.content.decode()
    assert "cdn." not in html and "swagger-ui-bundle.js" in html
    bundle = re.search(r'src="([^"]*swagger-ui-bundle\.js)"', html).group(1)
    assert client.get(bundle).status_code == 200
