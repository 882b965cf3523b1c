"""A user with only `change` on a service cannot scale it (issue 14): changing the autoscaler's
min/max bounds while it is on, or turning it on, needs `scale_service` too, on every path that
edits them (the SLA page's settings form, the service's admin page, both actions). The refusal is a
403 naming the permission, nothing changes, and it is audited as a denied access.

Personas: carol (analyst) is given view + change on one service, not scale; bob (operator) has
scale but not change; alice is the admin; dave sees nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from guardian.shortcuts import assign_perm

from audit.models import AuditEntry
from autoscaling import actions as autoscaling_actions
from autoscaling.models import AutoscaleSettings
from console import actions as console_actions
from console.forms import ServiceSettings
from fleet.models import Service
from tests.conftest import service_with

pytestmark = pytest.mark.django_db


@pytest.fixture
def web(personas: dict[str, User]) -> Service:
    svc = service_with("web", autoscale_enabled=True, min_instances=1, max_instances=4)
    assign_perm("fleet.view_service", personas["carol"], svc)
    assign_perm("fleet.change_service", personas["carol"], svc)
    return svc


def form(svc: Service, **changes: Any) -> dict[str, Any]:
    """The SLA page's whole settings form as it shows the service now, with `changes`."""
    data = {k: ("" if v is None else v) for k, v in ServiceSettings(svc).fields_dict().items()}
    data.update(changes)
    if not data["autoscale_enabled"]:
        data.pop("autoscale_enabled")  # an unticked checkbox is not posted
    else:
        data["autoscale_enabled"] = "1"
    return data


def bounds(svc: Service) -> tuple[bool, int, int]:
    a = AutoscaleSettings.objects.get(pk=svc.pk)
    return a.autoscale_enabled, a.min_instances, a.max_instances


def updates(svc: Service) -> int:
    return AuditEntry.objects.filter(action="service.update", target_id=str(svc.pk)).count()


def test_change_without_scale_cannot_move_the_bounds_on_the_sla_page(web: Service, clients) -> None:
    before = updates(web)
    r = clients["carol"].post("/services/web/sla/settings/", form(web, max_instances=40))
    assert r.status_code == 403
    body = r.content.decode()
    assert "fleet.scale_service" in body and "max_instances" in body and "Nothing was changed" in body
    assert bounds(web) == (True, 1, 4) and updates(web) == before
    refused = AuditEntry.objects.filter(action="access.refused").latest("id")
    assert refused.outcome == AuditEntry.Outcome.DENIED and refused.actor == "carol"
    assert refused.payload["status"] == 403 and "fleet.scale_service" in refused.payload["detail"]
    # The rest of the form stays hers: the same page with the bounds as they are saves.
    r = clients["carol"].post("/services/web/sla/settings/", form(web, failure_threshold=5))
    assert r.status_code == 302
    assert Service.objects.get(pk=web.pk).probe_settings.failure_threshold == 5 and bounds(web) == (True, 1, 4)


def test_change_without_scale_cannot_turn_the_autoscaler_on(web: Service, clients) -> None:
    """Otherwise bounds set while it was off (which scale nothing) would scale once it is on."""
    AutoscaleSettings.objects.filter(pk=web.pk).update(autoscale_enabled=False)
    assert clients["carol"].post("/services/web/sla/settings/", form(web, min_instances=3)).status_code == 302
    assert bounds(web) == (False, 3, 4)
    r = clients["carol"].post("/services/web/sla/settings/", form(web, autoscale_enabled=True))
    assert r.status_code == 403 and "turning the autoscaler on" in r.content.decode()
    assert bounds(web) == (False, 3, 4)
    # Turning it off scales nothing: change is enough.
    AutoscaleSettings.objects.filter(pk=web.pk).update(autoscale_enabled=True)
    assert clients["carol"].post("/services/web/sla/settings/", form(web, autoscale_enabled=False)).status_code == 302
    assert bounds(web) == (False, 3, 4)


def test_the_other_personas(web: Service, clients, personas) -> None:
    data = form(web, max_instances=6)
    assert clients["dave"].post("/services/web/sla/settings/", data).status_code == 404
    assert clients["bob"].post("/services/web/sla/settings/", data).status_code == 403  # scale, not change
    assert bounds(web) == (True, 1, 4)
    assert clients["alice"].post("/services/web/sla/settings/", data).status_code == 302
    assert bounds(web) == (True, 1, 6)
    # change + scale (per object) is what it takes.
    assign_perm("fleet.scale_service", personas["carol"], web)
    assert clients["carol"].post("/services/web/sla/settings/", form(web, min_instances=2)).status_code == 302
    assert bounds(web) == (True, 2, 6)


@pytest.mark.parametrize("path", ["console", "autoscaling"])
def test_both_actions_refuse_and_change_nothing(web: Service, personas, path: str) -> None:
    carol = User.objects.get(pk=personas["carol"].pk)
    act = console_actions.update_service_settings if path == "console" else autoscaling_actions.update_settings
    before = AuditEntry.objects.count()
    with pytest.raises(autoscaling_actions.ScalingRefused, match="fleet.scale_service"):
        act(web, {"max_instances": 50}, actor=carol)
    if path == "console":  # its other parts are not applied either
        with pytest.raises(autoscaling_actions.ScalingRefused):
            console_actions.update_service_settings(web, {"failure_threshold": 9, "min_instances": 3}, actor=carol)
        assert Service.objects.get(pk=web.pk).probe_settings.failure_threshold != 9
    assert bounds(web) == (True, 1, 4) and AuditEntry.objects.count() == before
    # Unchanged bounds are no scaling; system actors are the operator's own code.
    act(web, {"min_instances": 1, "max_instances": 4}, actor=carol)
    act(web, {"max_instances": 8}, actor="system:test")
    assert bounds(web) == (True, 1, 8)


def staff_editor(user: User) -> None:
    """Admin asks for model-level rights: staff with view + change on services and on the
    autoscaler's settings rows (the inline's own model), still not scale."""
    user.is_staff = True
    user.save()
    user.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_service", "change_service", "view_autoscalesettings", "change_autoscalesettings"]))


def _admin_post(client, svc: Service, **auto: Any) -> Any:
    page = client.get(f"/admin/fleet/service/{svc.pk}/change/")
    assert page.status_code == 200
    form_ = page.context["adminform"].form
    data = {k: v for k, v in form_.initial.items() if v is not None and k in form_.fields}
    for formset in page.context["inline_admin_formsets"]:
        fs = formset.formset
        data |= {f"{fs.prefix}-TOTAL_FORMS": "1", f"{fs.prefix}-INITIAL_FORMS": "1",
                 f"{fs.prefix}-MIN_NUM_FORMS": "0", f"{fs.prefix}-MAX_NUM_FORMS": "1"}
        sub = fs.forms[0]
        data |= {f"{sub.prefix}-{k}": v for k, v in sub.initial.items() if v is not None and k in sub.fields}
        data[f"{sub.prefix}-service"] = svc.pk
    # Posted whether the page offered the fields or not (a crafted request).
    data |= {(k if k in form_.fields else f"autoscale_settings-0-{k}"): v for k, v in auto.items()}
    data = {k: v for k, v in data.items() if v is not False}
    return page, client.post(f"/admin/fleet/service/{svc.pk}/change/", data)


def test_admin_shows_the_bounds_read_only_and_ignores_them(web: Service, clients, personas) -> None:
    staff_editor(personas["carol"])
    page, r = _admin_post(clients["carol"], web, max_instances="40", target_cpu_percent="55")
    assert b'name="autoscale_settings-0-max_instances"' not in page.content
    assert b'name="autoscale_settings-0-target_cpu_percent"' in page.content  # the rest is hers
    assert AutoscaleSettings.objects.get(pk=web.pk).target_cpu_percent == 55
    assert r.status_code == 302 and bounds(web) == (True, 1, 4)
    page, r = _admin_post(clients["alice"], web, max_instances="40")
    assert b'name="autoscale_settings-0-max_instances"' in page.content
    assert r.status_code == 302 and bounds(web) == (True, 1, 40)


def test_admin_save_that_would_scale_is_a_403_and_rolls_back(web: Service, clients, personas, monkeypatch) -> None:
    """If the admin form offers the bounds anyway (built before someone turned the autoscaler on,
    played here by an inline that marks nothing read-only), the action refuses at save time: a
    403, the whole admin save (the service's own fields too) rolled back, audited naming why."""
    from autoscaling.admin import AutoscaleSettingsInline

    staff_editor(personas["carol"])
    monkeypatch.setattr(AutoscaleSettingsInline, "get_readonly_fields", lambda self, request, obj=None: ())
    before = updates(web)
    page, r = _admin_post(clients["carol"], web, max_instances="40", description="edited by carol")
    assert b'name="autoscale_settings-0-max_instances"' in page.content
    assert r.status_code == 403
    assert bounds(web) == (True, 1, 4) and Service.objects.get(pk=web.pk).description != "edited by carol"
    assert updates(web) == before
    refused = AuditEntry.objects.filter(action="access.refused").latest("id")
    assert refused.actor == "carol" and refused.outcome == AuditEntry.Outcome.DENIED
    assert "fleet.scale_service" in refused.payload["detail"]
