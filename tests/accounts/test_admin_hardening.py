"""Django admin for a staff user who is not a superuser: object-permission pages only for those who
may grant, django-q2's schedules and task resubmission for superusers only, and an API token's
expiry never moved later."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import Failure, Schedule
from guardian.shortcuts import get_perms

from accounts.actions import create_api_token
from accounts.models import ApiToken
from audit.models import AuditEntry
from fleet.models import Service
from workflows.models import WorkflowDefinition

pytestmark = pytest.mark.django_db


def perms(*names: str) -> list[Permission]:
    out = []
    for name in names:
        app, code = name.split(".")
        out.append(Permission.objects.get(content_type__app_label=app, codename=code))
    return out


@pytest.fixture
def staffer(personas) -> User:
    """Staff, not superuser, with every model permission on services, flows, tokens and django-q2's
    models: what an operator trusted with admin might hold."""
    user = User.objects.create_user("sam", "sam@example.org", "pw-sam-123", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label__in=["fleet", "workflows", "accounts", "django_q"]))
    return user


def as_user(user: User) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_object_permission_pages_only_for_those_who_may_grant(staffer, personas, demo) -> None:
    svc = Service.objects.get(name="HMS-SVC")
    flow = WorkflowDefinition.objects.get(slug="exportPatientData")
    dave = personas["dave"]
    c = as_user(staffer)
    # The model's own change page is fine: sam may change services.
    assert c.get(reverse("admin:fleet_service_change", args=[svc.pk])).status_code == 200
    for name, obj in (("fleet_service", svc), ("workflows_workflowdefinition", flow)):
        assert c.get(reverse(f"admin:{name}_permissions", args=[obj.pk])).status_code == 403
        user_page = reverse(f"admin:{name}_permissions_manage_user", args=[obj.pk, dave.pk])
        assert c.get(user_page).status_code == 403
        group = dave.groups.model.objects.get(name="operators")
        assert c.get(reverse(f"admin:{name}_permissions_manage_group", args=[obj.pk, group.pk])).status_code == 403
    # Granting oneself a right by posting the form is refused too, and nothing is granted.
    code = "run_workflowdefinition"
    r = c.post(reverse("admin:workflows_workflowdefinition_permissions_manage_user", args=[flow.pk, staffer.pk]),
               {"permissions": [code]})
    assert r.status_code == 403
    assert code not in get_perms(User.objects.get(pk=staffer.pk), flow)
    # A superuser, and staff holding guardian's own permissions, may.
    assert as_user(personas["alice"]).get(reverse("admin:fleet_service_permissions", args=[svc.pk])).status_code == 200
    staffer.user_permissions.add(*perms("guardian.change_userobjectpermission",
                                        "guardian.change_groupobjectpermission"))
    c = as_user(User.objects.get(pk=staffer.pk))
    assert c.get(reverse("admin:fleet_service_permissions", args=[svc.pk])).status_code == 200
    assert c.get(reverse("admin:fleet_service_permissions_manage_user", args=[svc.pk, dave.pk])).status_code == 200


def test_django_q_schedules_and_task_resubmission_are_for_superusers_only(staffer, personas) -> None:
    sched = Schedule.objects.create(name="nightly", func="math.floor", args="1")
    failed = Failure.objects.create(id="f" * 32, name="boom", func="math.floor", started=timezone.now(),
                                    stopped=timezone.now(), success=False)
    c = as_user(staffer)
    for url in (reverse("admin:django_q_schedule_changelist"), reverse("admin:django_q_schedule_add"),
                reverse("admin:django_q_schedule_change", args=[sched.pk]),
                reverse("admin:django_q_failure_changelist"), reverse("admin:django_q_success_changelist")):
        assert c.get(url).status_code == 403, url
    # Adding a schedule that would call any function: refused, nothing stored.
    r = c.post(reverse("admin:django_q_schedule_add"),
               {"name": "evil", "func": "os.system", "args": "'id'", "schedule_type": "O", "repeats": "-1",
                "next_run_0": "2030-01-01", "next_run_1": "00:00:00"})
    assert r.status_code == 403 and not Schedule.objects.filter(name="evil").exists()
    # Resubmitting the failed task: refused, the task is still there and nothing was queued.
    r = c.post(reverse("admin:django_q_failure_changelist"),
               {"action": "resubmit_task", "_selected_action": [failed.pk]})
    assert r.status_code == 403 and Failure.objects.filter(pk=failed.pk).exists()
    # The admin index does not offer the section.
    assert b"django_q" not in c.get(reverse("admin:index")).content.replace(b"django_q_", b"")
    alice = as_user(personas["alice"])
    assert alice.get(reverse("admin:django_q_schedule_changelist")).status_code == 200
    assert alice.get(reverse("admin:django_q_failure_changelist")).status_code == 200


def change_token(c: Client, token: ApiToken, expires: str) -> object:
    date, _, time = expires.partition(" ")
    return c.post(reverse("admin:accounts_apitoken_change", args=[token.pk]),
                  {"name": token.name, "expires_at_0": date, "expires_at_1": time})


def test_a_token_expiry_can_be_brought_earlier_in_admin_but_never_later(personas) -> None:
    expiry = (timezone.now() + timedelta(days=30)).replace(microsecond=0)
    token, _ = create_api_token(personas["bob"], actor="system:test", name="ci", expires_at=expiry)
    c = as_user(personas["alice"])
    fmt = "%Y-%m-%d %H:%M:%S"
    for later in ((expiry + timedelta(days=365)).strftime(fmt), " "):  # a year later; no expiry at all
        r = change_token(c, token, later)
        assert r.status_code == 200 and b"may only be moved earlier" in r.content, later
        token.refresh_from_db()
        assert token.expires_at == expiry
    assert not AuditEntry.objects.filter(action="token.update").exists()
    sooner = expiry - timedelta(days=29)
    r = change_token(c, token, sooner.strftime(fmt))
    assert r.status_code == 302
    token.refresh_from_db()
    assert token.expires_at == sooner
    entry = AuditEntry.objects.get(action="token.update")
    assert entry.actor == "alice" and entry.payload["changes"]["expires_at"][1] == sooner.isoformat()


def test_the_token_action_refuses_a_later_expiry_itself(personas) -> None:
    from accounts.actions import update_api_token

    expiry = timezone.now() + timedelta(days=1)
    token, _ = create_api_token(personas["bob"], actor="system:test", expires_at=expiry)
    with pytest.raises(ValueError, match="only be moved earlier"):
        update_api_token(token, actor="system:test", expires_at=expiry + timedelta(seconds=1))
    with pytest.raises(ValueError):
        update_api_token(token, actor="system:test", clear_expiry=True)
    token.refresh_from_db()
    assert token.expires_at == expiry
