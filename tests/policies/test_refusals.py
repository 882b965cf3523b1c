"""Freeze, cooldown and bounds through the REST API and the pages; dry runs; the preflight partial
next to the scale and launch controls."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from audit.models import AuditEntry
from fleet.models import Service
from policies.models import Policy
from tests.conftest import api
from workflows.models import WorkflowDefinition, WorkflowRun

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


def freeze(applies: str = "both", exempt: str | None = None) -> Policy:
    now = timezone.now()
    return Policy.objects.create(name="release freeze", kind=Policy.Kind.CHANGE_FREEZE, applies_to=applies,
                                 freeze_start=now - timedelta(minutes=5), freeze_end=now + timedelta(hours=1),
                                 exempt_group=Group.objects.get(name=exempt) if exempt else None)


def scale(clients, tokens, who: str, n: int, service: str = "HMS-SVC", dry: bool = False):
    return api(clients["anon"], "post", "/mgmt/scale" + ("?dry_run=1" if dry else ""),
               {"service": service, "instances": n}, tokens[who])


def audits(action: str, outcome: str) -> int:
    return AuditEntry.objects.filter(action=action, outcome=outcome).count()


# --- REST API ----------------------------------------------------------------------------------

def test_bounds_refuse_with_422_and_the_numbers(clients, tokens, demo) -> None:
    Policy.objects.create(name="svc bounds", kind=Policy.Kind.INSTANCE_BOUNDS,
                          service=Service.objects.get(name="HMS-SVC"),
                          min_instances=0, max_instances=3)
    r = scale(clients, tokens, "bob", 4)
    assert r.status_code == 422
    assert r.json() | {"reasons": []} == {
        "error": "policy_violation", "policy": "svc bounds", "kind": "instance_bounds",
        "detail": "HMS-SVC may run at most 3 instances; 4 requested.", "limit": 3, "current": 4,
        "reasons": [], "policies": ["svc bounds"]}
    assert Service.objects.get(name="HMS-SVC").desired_instances == 0
    assert audits("scale", "denied") == 1


def test_freeze_refuses_with_409_unless_exempt(clients, tokens, personas, demo) -> None:
    freeze(exempt="auditors")
    r = scale(clients, tokens, "bob", 0)
    assert r.status_code == 409 and r.json()["kind"] == "change_freeze"
    assert "is in force until" in r.json()["detail"]
    flow = api(clients["anon"], "post", "/mgmt/workflows", {"flowId": "analyticsReport"}, tokens["carol"])
    assert flow.status_code == 409
    assert audits("scale", "denied") == 1 and audits("workflow.start", "denied") == 1
    personas["bob"].groups.add(Group.objects.get(name="auditors"))
    assert scale(clients, tokens, "bob", 0).status_code == 200


def test_freeze_of_scaling_only_lets_runs_through(clients, tokens, demo) -> None:
    freeze(applies="scale")
    assert scale(clients, tokens, "bob", 0).status_code == 409
    assert api(clients["anon"], "post", "/mgmt/workflows", {"flowId": "analyticsReport"},
               tokens["carol"]).status_code == 200


def test_cooldown_refuses_with_409_then_a_no_op_is_still_allowed(clients, tokens, demo) -> None:
    Policy.objects.create(name="slow down", kind=Policy.Kind.SCALING_RATE, cooldown_seconds=300, max_step=2)
    assert scale(clients, tokens, "bob", 0).status_code == 200  # records last_scaled_at
    r = scale(clients, tokens, "bob", 1)
    assert r.status_code == 409 and r.json()["limit"] == 300 and 0 <= r.json()["current"] < 300
    assert "the cooldown is 300 s" in r.json()["detail"]
    r = scale(clients, tokens, "bob", 3)
    assert r.status_code == 422 and r.json()["reasons"][1].startswith("HMS-SVC was scaled")


def test_dry_run_answers_the_decision_and_changes_nothing(clients, tokens, personas, demo) -> None:
    Policy.objects.create(name="svc bounds", kind=Policy.Kind.INSTANCE_BOUNDS, max_instances=3)
    before = AuditEntry.objects.count()
    r = scale(clients, tokens, "bob", 7, dry=True)
    assert r.status_code == 200 and r.json()["dryRun"] is True and r.json()["allowed"] is False
    assert r.json()["detail"] == "HMS-SVC may run at most 3 instances; 7 requested."
    ok = scale(clients, tokens, "bob", 2, dry=True).json()
    assert ok["allowed"] is True and ok["checked"] == ["svc bounds"]
    flow = WorkflowDefinition.objects.get(slug="analyticsReport")
    WorkflowRun.objects.bulk_create([WorkflowRun(definition=flow, flow_slug=flow.slug, tag_list=",analytics,",
                                                 actor=personas["carol"]) for _ in range(5)])
    r = api(clients["anon"], "post", "/mgmt/workflows?dry_run=1", {"flowId": "analyticsReport"}, tokens["carol"])
    assert r.status_code == 200 and r.json()["allowed"] is False and r.json()["current"] == 5
    assert AuditEntry.objects.count() == before
    assert Service.objects.get(name="HMS-SVC").desired_instances == 0
    assert WorkflowRun.objects.count() == 5


def test_quota_through_the_api_429(clients, tokens, personas, demo) -> None:
    for _ in range(5):
        r = api(clients["anon"], "post", "/mgmt/workflows", {"flowId": "analyticsReport", "data": {"seconds": 30}},
                tokens["carol"])
        assert r.status_code == 200
    r = api(clients["anon"], "post", "/mgmt/workflows", {"flowId": "analyticsReport"}, tokens["carol"])
    assert r.status_code == 429
    assert r.json()["detail"] == "5 of 5 analytics runs already active for carol."
    # Another flow outside the quota's scope still starts (bob is an operator and may run it).
    assert api(clients["anon"], "post", "/mgmt/workflows", {"flowId": "exportPatientData"},
               tokens["bob"]).status_code == 200
    assert audits("workflow.start", "success") == 6 and audits("workflow.start", "denied") == 1


# --- pages ---------------------------------------------------------------------------------------

def preflight(client, **params):
    return client.get("/policies/preflight/", params, **HX)


def test_preflight_partial_shows_allowed_or_the_reason(clients, personas, demo) -> None:
    Policy.objects.create(name="svc bounds", kind=Policy.Kind.INSTANCE_BOUNDS, max_instances=3)
    ok = preflight(clients["bob"], action="scale", service="HMS-SVC", instances="2")
    assert ok.status_code == 200 and 'data-allowed="true"' in ok.content.decode()
    no = preflight(clients["bob"], action="scale", service="HMS-SVC", instances="9").content.decode()
    assert 'data-allowed="false"' in no and 'data-status="422"' in no
    assert "HMS-SVC may run at most 3 instances; 9 requested." in no
    bad = preflight(clients["bob"], action="scale", service="HMS-SVC", instances="lots")
    assert bad.status_code == 200 and "whole number" in bad.content.decode()
    plain = clients["bob"].get("/policies/preflight/", {"action": "scale", "service": "HMS-SVC", "instances": "-1"})
    assert plain.status_code == 400 and plain.json()["error"] == "invalid_request"
    assert clients["bob"].get("/policies/preflight/", {"action": "nope"}).status_code == 400
    flow = WorkflowDefinition.objects.get(slug="analyticsReport")
    WorkflowRun.objects.bulk_create([WorkflowRun(definition=flow, flow_slug=flow.slug, tag_list=",analytics,",
                                                 actor=personas["carol"]) for _ in range(5)])
    run = preflight(clients["carol"], action="run", flowId="analyticsReport").content.decode()
    assert "5 of 5 analytics runs already active for carol." in run and 'data-status="429"' in run
    assert 'data-allowed="true"' in preflight(clients["bob"], action="run", flowId="analyticsReport").content.decode()


def test_preflight_agrees_with_the_api_dry_run(clients, tokens, demo) -> None:
    freeze(applies="scale", exempt="auditors")
    page = clients["bob"].get("/policies/preflight/", {"action": "scale", "service": "HMS-SVC", "instances": "1"},
                              HTTP_ACCEPT="application/json").json()
    dry = scale(clients, tokens, "bob", 1, dry=True).json()
    assert {k: page[k] for k in dry} == dry


def test_preflight_hides_what_the_user_may_not_touch(clients, demo) -> None:
    for who in ("dave", "carol"):  # carol (analyst) sees no service
        assert preflight(clients[who], action="scale", service="HMS-SVC", instances="1").status_code == 404
    assert preflight(clients["dave"], action="run", flowId="analyticsReport").status_code == 404
    assert preflight(clients["carol"], action="run", flowId="exportPatientData").status_code == 404
    # A page left open after the session ended: htmx is told to send the whole page to sign-in.
    r = clients["anon"].get("/policies/preflight/", {"action": "run", "flowId": "analyticsReport"},
                            HTTP_HX_CURRENT_URL="http://testserver/runs/?flow=x", **HX)
    assert r.status_code == 401 and r["HX-Redirect"] == "/login/?next=%2Fruns%2F"
    plain = clients["anon"].get("/policies/preflight/", {"action": "run"})
    assert plain.status_code == 302 and plain["Location"].startswith("/login/?next=")


def test_pages_show_the_preflight_next_to_the_controls(clients, demo) -> None:
    overview = clients["bob"].get("/").content.decode()
    row = re.search(r'<tr id="service-hms-svc".*?</tr>', overview, re.S).group(0)
    assert 'hx-get="/policies/preflight/?action=scale&amp;service=HMS-SVC"' in row
    assert 'hx-include="previous [name=instances]"' in row
    runs = clients["carol"].get("/runs/").content.decode()
    assert 'hx-get="/policies/preflight/?action=run"' in runs


def test_scale_row_shows_a_refusal_and_the_denial_is_audited(clients, demo) -> None:
    freeze(applies="scale")
    r = clients["bob"].post("/services/HMS-SVC/scale/", {"instances": "2"}, **HX)
    assert r.status_code == 200 and "Change freeze &#x27;release freeze&#x27; is in force" in r.content.decode()
    assert Service.objects.get(name="HMS-SVC").desired_instances == 0
    assert audits("scale", "denied") == 1


def test_launch_page_refusal_is_shown_and_audited(clients, personas, demo) -> None:
    freeze(applies="runs")
    r = clients["carol"].post("/runs/launch/", {"flowId": "analyticsReport", "data": "{}"}, follow=True)
    assert "Change freeze" in r.content.decode()
    assert WorkflowRun.objects.count() == 0 and audits("workflow.start", "denied") == 1
