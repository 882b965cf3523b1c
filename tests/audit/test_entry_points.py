"""Each entry point writes exactly one entry per action: Django admin (users, groups, guardian
object permissions), sign-in/out, API refusals, the page, the controller."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from audit.models import AuditEntry
from tests.conftest import api

pytestmark = pytest.mark.django_db


def _new(since: int, action: str | None = None) -> list[AuditEntry]:
    qs = AuditEntry.objects.filter(id__gt=since).order_by("id")
    return list(qs.filter(action=action) if action else qs)


def _mark() -> int:
    last = AuditEntry.objects.order_by("-id").first()
    return last.id if last else 0


# --- Django admin: users and groups -------------------------------------------------------------
def test_admin_user_add_change_delete_each_write_one_entry_with_a_diff(clients, personas) -> None:
    admin = clients["alice"]
    mark = _mark()
    r = admin.post("/admin/auth/user/add/", {"username": "frank", "password1": "Pw-frank-12345!",
                                             "password2": "Pw-frank-12345!", "usable_password": "true"})
    assert r.status_code == 302, r.content[:2000]
    frank = User.objects.get(username="frank")
    (created,) = _new(mark)
    assert (created.action, created.actor, created.target_id) == ("user.create", "alice", str(frank.pk))
    assert "Pw-frank" not in str(created.payload)

    mark = _mark()
    operators = Group.objects.get(name="operators")
    r = admin.post(f"/admin/auth/user/{frank.pk}/change/", {
        "username": "frank", "first_name": "Frank", "last_name": "", "email": "frank@example.org",
        "is_active": "on", "groups": [str(operators.pk)], "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
    })
    assert r.status_code == 302, r.content[:3000]
    (changed,) = _new(mark)
    assert changed.action == "user.update"
    assert changed.payload["changes"]["first_name"] == ["", "Frank"]
    assert changed.payload["changes"]["email"] == ["", "frank@example.org"]
    assert changed.payload["changes"]["groups"] == [[], ["operators"]]

    mark = _mark()
    r = admin.post(f"/admin/auth/user/{frank.pk}/delete/", {"post": "yes"})
    assert r.status_code == 302
    (deleted,) = _new(mark)
    assert deleted.action == "user.delete" and deleted.payload["deleted"]["username"] == "frank"
    assert "password" not in deleted.payload["deleted"]


def test_admin_group_change_records_permission_diff(clients, personas) -> None:
    from django.contrib.auth.models import Permission

    group = Group.objects.create(name="reviewers")
    perm = Permission.objects.get(codename="view_auditentry")
    mark = _mark()
    r = clients["alice"].post(f"/admin/auth/group/{group.pk}/change/", {"name": "reviewers",
                                                                       "permissions": [str(perm.pk)]})
    assert r.status_code == 302
    (entry,) = _new(mark)
    assert entry.action == "group.update"
    assert entry.payload["changes"]["permissions"][0] == []
    assert "view" in entry.payload["changes"]["permissions"][1][0].lower()


def test_admin_guardian_object_permission_change_writes_one_entry(clients, personas, demo) -> None:
    from guardian.shortcuts import get_perms

    from fleet.models import Service

    svc = Service.objects.first()
    dave = personas["dave"]
    mark = _mark()
    r = clients["alice"].post(f"/admin/fleet/service/{svc.pk}/permissions/user-manage/{dave.pk}/",
                              {"permissions": ["view_service", "scale_service"]})
    assert r.status_code == 302, r.content[:2000]
    assert set(get_perms(dave, svc)) >= {"view_service", "scale_service"}
    (entry,) = _new(mark)
    assert (entry.action, entry.actor, entry.target_id) == ("permission.change", "alice", str(svc.pk))
    assert entry.payload == {"user": "dave", "added": ["scale_service", "view_service"], "removed": []}

    mark = _mark()
    r = clients["alice"].post(f"/admin/fleet/service/{svc.pk}/permissions/user-manage/{dave.pk}/",
                              {"permissions": ["view_service"]})
    assert r.status_code == 302
    (entry,) = _new(mark)
    assert entry.payload["removed"] == ["scale_service"] and entry.payload["added"] == []


def test_assigning_a_permission_outside_admin_is_left_to_the_action(personas, demo) -> None:
    from guardian.shortcuts import assign_perm

    from fleet.models import Service

    mark = _mark()
    assign_perm("view_service", personas["dave"], Service.objects.first())
    assert _new(mark) == []


# --- sign-in, sign-out ----------------------------------------------------------------------------
def test_sign_in_and_sign_out_are_audited_once_each(personas) -> None:
    c = Client(HTTP_USER_AGENT="pytest-browser/1.0")
    mark = _mark()
    r = c.post("/login/", {"username": "bob", "password": "pw-bob-123"})
    assert r.status_code == 302
    (login,) = _new(mark)
    assert (login.action, login.actor, login.outcome) == ("auth.login", "bob", "success")
    assert login.ip == "127.0.0.1" and login.user_agent == "pytest-browser/1.0" and login.request_id
    mark = _mark()
    c.post("/logout/")
    (logout,) = _new(mark)
    assert (logout.action, logout.actor) == ("auth.logout", "bob")


def test_failed_sign_in_is_audited_once(personas) -> None:
    mark = _mark()
    Client().post("/login/", {"username": "bob", "password": "wrong-password"})
    entries = _new(mark)
    assert [(e.action, e.outcome) for e in entries] == [("auth.login", "denied")]
    assert "wrong-password" not in str(entries[0].payload)


# --- refusals -------------------------------------------------------------------------------------
def test_api_401_is_audited_once_with_where_from(personas) -> None:
    mark = _mark()
    r = api(Client(REMOTE_ADDR="127.0.0.9"), "GET", "/mgmt/services", token="hms_nope_nope")
    assert r.status_code == 401
    (entry,) = _new(mark)
    assert (entry.action, entry.outcome, entry.actor) == ("access.refused", "denied", "anonymous")
    assert entry.payload["status"] == 401 and entry.payload["path"] == "/mgmt/services"
    assert entry.ip == "127.0.0.9"
    assert "hms_nope" not in str(entry.payload)


def test_page_403_is_audited_once(clients) -> None:
    mark = _mark()
    r = clients["dave"].get("/audit/")
    assert r.status_code == 403
    (entry,) = _new(mark)
    assert (entry.action, entry.actor, entry.payload["status"]) == ("access.refused", "dave", 403)


def test_api_403_carries_the_token_id_never_the_token(personas, tokens) -> None:
    mark = _mark()
    r = api(Client(), "GET", "/mgmt/audit", token=tokens["dave"])
    assert r.status_code == 403
    (entry,) = _new(mark)
    assert entry.token_id is not None and entry.actor == "dave"
    assert tokens["dave"] not in str(entry.payload) and entry.payload["error"] == "forbidden"


def test_policy_denial_is_not_counted_twice(personas, tokens, demo) -> None:
    """A denial the action audits (outcome=denied) is not audited again by the middleware."""
    from fleet.models import Service
    from policies.models import Policy

    svc = Service.objects.first()
    Policy.objects.create(name="tiny", kind=Policy.Kind.INSTANCE_BOUNDS, service=svc,
                          min_instances=0, max_instances=1)
    mark = _mark()
    r = api(Client(), "POST", "/mgmt/scale", {"service": svc.name, "instances": 5, "dryRun": False},
            token=tokens["alice"])
    assert r.status_code in (403, 409, 422, 429), r.content
    entries = _new(mark)
    assert [(e.action, e.outcome) for e in entries] == [("scale", "denied")]


# --- controller -----------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_controller_tick_seals_what_it_finds() -> None:
    from django.db import transaction

    from audit.actions import record
    from controller.loop import Controller

    with transaction.atomic():
        record("test.controller", actor="system:controller")
    assert AuditEntry.objects.filter(seq__isnull=True).exists()
    Controller().tick()
    assert not AuditEntry.objects.filter(seq__isnull=True).exists()


# --- API and page actions: one entry each, with who and where ------------------------------------------
def test_api_action_writes_one_entry_with_token_and_request_id(personas, tokens, demo) -> None:
    from accounts.models import ApiToken
    from fleet.models import Service

    svc = Service.objects.first()
    mark = _mark()
    r = api(Client(HTTP_USER_AGENT="admin-portal/2.0"), "POST", "/mgmt/scale",
            {"service": svc.name, "instances": 0}, token=tokens["alice"], HTTP_X_REQUEST_ID="req-audit-1")
    assert r.status_code == 200, r.content
    (entry,) = _new(mark)
    assert (entry.action, entry.actor, entry.outcome) == ("scale", "alice", "success")
    assert entry.request_id == "req-audit-1" and entry.user_agent == "admin-portal/2.0"
    token = ApiToken.objects.get(user__username="alice")
    assert entry.token_id == token.pk
    assert tokens["alice"] not in str(entry.payload)
    assert entry.target_repr == str(svc)


def test_page_action_writes_one_entry(clients, demo) -> None:
    from fleet.models import Service

    svc = Service.objects.first()
    mark = _mark()
    r = clients["alice"].post(f"/services/{svc.name}/scale/", {"instances": "0"})
    assert r.status_code in (200, 302), r.content[:500]
    assert [(e.action, e.actor) for e in _new(mark)] == [("scale", "alice")]


# --- safety net: an admin change no action audited ---------------------------------------------------
def test_admin_delete_that_no_action_audits_still_writes_one_entry(clients, demo) -> None:
    from workflows.models import WorkflowDefinition

    flow = WorkflowDefinition.objects.first()
    mark = _mark()
    r = clients["alice"].post(f"/admin/workflows/workflowdefinition/{flow.pk}/delete/", {"post": "yes"})
    assert r.status_code == 302
    assert not WorkflowDefinition.objects.filter(pk=flow.pk).exists()
    (entry,) = _new(mark)
    assert (entry.action, entry.actor, entry.target_id) == ("admin.delete", "alice", str(flow.pk))
    assert entry.target_type == "workflows.workflowdefinition" and entry.target_repr == str(flow)


def test_admin_bulk_delete_writes_one_entry_per_object(clients, demo) -> None:
    from workflows.models import WorkflowDefinition

    pks = list(WorkflowDefinition.objects.values_list("pk", flat=True)[:2])
    mark = _mark()
    r = clients["alice"].post("/admin/workflows/workflowdefinition/", {
        "action": "delete_selected", "_selected_action": [str(pk) for pk in pks], "post": "yes"})
    assert r.status_code == 302
    assert sorted((e.action, e.target_id) for e in _new(mark)) == sorted(("admin.delete", str(pk)) for pk in pks)


def test_admin_change_audited_by_its_action_is_not_doubled(clients, demo) -> None:
    from fleet.models import Service

    svc = Service.objects.first()
    mark = _mark()
    r = clients["alice"].post(f"/admin/fleet/service/{svc.pk}/delete/", {"post": "yes"})
    assert r.status_code == 302
    assert [e.action for e in _new(mark)] == ["service.delete"]
