"""Policies are edited in Django admin: a form per kind, validation, audited before→after diffs,
and an edit decides the very next request."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from audit.models import AuditEntry
from policies.models import Policy
from tests.conftest import api
from workflows.models import WorkflowDefinition, WorkflowRun

pytestmark = pytest.mark.django_db
ADD = "/admin/policies/policy/add/"


def test_add_asks_for_the_kind_first_then_shows_only_its_fields(clients) -> None:
    page = clients["alice"].get(ADD)
    assert page.status_code == 200
    for kind in Policy.Kind.values:
        assert f'href="?kind={kind}"' in page.content.decode()
    form = clients["alice"].get(ADD + "?kind=change_freeze").content.decode()
    assert 'name="freeze_start_0"' in form and 'name="exempt_group"' in form
    assert 'name="limit"' not in form and 'name="max_step"' not in form
    form = clients["alice"].get(ADD + "?kind=concurrent_runs").content.decode()
    assert 'name="limit"' in form and 'name="scope_tag"' in form and 'name="freeze_start_0"' not in form


@pytest.mark.parametrize(("data", "message"), [
    ({"kind": "concurrent_runs", "scope_tag": "analytics", "scope_flow": "analyticsReport", "limit": "3"},
     "exactly one of"),
    ({"kind": "concurrent_runs", "scope_tag": "analytics", "limit": ""}, "needs a limit"),
    ({"kind": "concurrent_runs", "scope_tag": "analytics", "limit": "0"}, "greater than or equal to 1"),
    ({"kind": "instance_bounds", "min_instances": "5", "max_instances": "2"}, "must not exceed"),
    ({"kind": "instance_bounds"}, "a minimum, a maximum, or both"),
    ({"kind": "scaling_rate"}, "a largest step, a cooldown, or both"),
    ({"kind": "change_freeze", "freeze_start_0": "2030-01-02", "freeze_start_1": "10:00",
      "freeze_end_0": "2030-01-01", "freeze_end_1": "10:00", "applies_to": "both"}, "must end after"),
])
def test_invalid_policies_are_refused_with_a_clear_message(clients, data, message) -> None:
    before = AuditEntry.objects.count()
    page = clients["alice"].post(ADD + f"?kind={data['kind']}", {"name": "x", "enabled": "on", "per_user": "on",
                                                                 **data})
    assert page.status_code == 200, "an invalid form is shown again, not saved"
    assert message in page.content.decode()
    assert not Policy.objects.filter(name="x").exists()
    assert AuditEntry.objects.count() == before


def test_admin_edit_decides_the_next_request_and_is_audited_with_a_diff(clients, tokens, personas, demo) -> None:
    policy = Policy.objects.get(kind=Policy.Kind.CONCURRENT_RUNS)
    flow = WorkflowDefinition.objects.get(slug="analyticsReport")
    for _ in range(2):
        r = api(clients["anon"], "post", "/mgmt/workflows", {"flowId": flow.slug}, tokens["carol"])
        assert r.status_code == 200
    page = clients["alice"].post(f"/admin/policies/policy/{policy.pk}/change/", {
        "name": policy.name, "enabled": "on", "description": policy.description,
        "scope_tag": "analytics", "scope_flow": "", "per_user": "on", "limit": "2",
    })
    assert page.status_code == 302, page.content.decode()[:2000]
    refused = api(clients["anon"], "post", "/mgmt/workflows", {"flowId": flow.slug}, tokens["carol"])
    assert refused.status_code == 429
    assert refused.json() | {"reasons": None} == {
        "error": "policy_violation", "policy": policy.name, "kind": "concurrent_runs",
        "detail": "2 of 2 analytics runs already active for carol.", "limit": 2, "current": 2,
        "reasons": None, "policies": [policy.name]}
    entry = AuditEntry.objects.filter(action="policy.update").get()
    assert entry.actor == "alice" and entry.payload["changes"] == {"limit": [5, 2]}
    assert WorkflowRun.objects.filter(actor=personas["carol"]).count() == 2


def test_kind_cannot_be_switched_on_an_existing_policy(clients, demo) -> None:
    policy = Policy.objects.get(kind=Policy.Kind.CONCURRENT_RUNS)
    clients["alice"].post(f"/admin/policies/policy/{policy.pk}/change/", {
        "name": policy.name, "enabled": "on", "kind": "change_freeze", "scope_tag": "analytics",
        "per_user": "on", "limit": "5"})
    assert Policy.objects.get(pk=policy.pk).kind == Policy.Kind.CONCURRENT_RUNS


def test_create_and_delete_are_audited(clients) -> None:
    from fleet.models import Service

    svc = Service.objects.create(name="HMS-SVC", command="x")
    page = clients["alice"].post(ADD + "?kind=instance_bounds", {
        "kind": "instance_bounds", "name": "svc bounds", "enabled": "on", "service": str(svc.pk),
        "min_instances": "1", "max_instances": "3", "per_user": "on", "applies_to": "both"})
    assert page.status_code == 302
    policy = Policy.objects.get(name="svc bounds")
    assert (policy.min_instances, policy.max_instances, policy.limit) == (1, 3, None)
    created = AuditEntry.objects.get(action="policy.create")
    assert created.payload["after"]["max_instances"] == 3
    assert clients["alice"].post(f"/admin/policies/policy/{policy.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Policy.objects.filter(pk=policy.pk).exists()
    assert AuditEntry.objects.get(action="policy.delete").payload["before"]["min_instances"] == 1


def test_only_staff_with_model_permissions_edit_policies(clients, personas) -> None:
    # bob operates services but is not staff: admin sends him to its sign-in page.
    assert clients["bob"].get("/admin/policies/policy/").status_code == 302
    staff = User.objects.create_user("sam", password="pw-sam-12345", is_staff=True)
    c = Client()
    c.force_login(staff)
    assert c.get("/admin/policies/policy/").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_policy"))
    assert c.get("/admin/policies/policy/").status_code == 200
    assert c.get(ADD + "?kind=scaling_rate").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="add_policy"))
    assert c.post(ADD + "?kind=scaling_rate", {"kind": "scaling_rate", "name": "r", "enabled": "on",
                                               "max_step": "2"}).status_code == 302
    assert AuditEntry.objects.get(action="policy.create").actor == "sam"
