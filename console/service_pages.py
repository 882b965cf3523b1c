"""A service's two pages, which join several apps: the detail page (fleet's live instances, the
autoscaler's explanation and timeline, the audit events) and the SLA page (slo's figures,
health's maintenance windows, the autoscaler, the settings form), with the forms the SLA page
posts. Each form is parsed by a Django form and applied by the owning app's action."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from audit import events
from audit.context import note_refusal
from audit.models import AuditEntry
from autoscaling import actions as autoscaling_actions
from autoscaling.forms import OverrideForm
from autoscaling.models import ScaleOverride
from autoscaling.views import explanation
from console import actions
from console.forms import ServiceSettings
from core.http import htmx_partial, redirect_back
from core.permissions import can
from fleet import actions as fleet_actions
from fleet import reconcile
from fleet.models import Instance, Service
from fleet.selectors import service_for
from health import actions as health_actions
from health.forms import MaintenanceForm
from health.models import MaintenanceWindow
from slo.views import service_card


# --- the detail page --------------------------------------------------------------------------------
@login_required
def service_detail(request: HttpRequest, name: str) -> HttpResponse:
    svc = service_for(request.user, name)
    context = {
        "service": svc,
        "status": reconcile.status(svc),
        "instances": svc.instances.filter(state__in=Instance.LIVE_STATES + (Instance.State.STOPPING,)),
        "recent_instances": svc.instances.exclude(state__in=Instance.LIVE_STATES).order_by("-id")[:10],
        "can_scale": can(request.user, "scale", svc),
        "events": AuditEntry.objects.filter(target_type__in=events.SERVICE_TARGET_TYPES, target_id=str(svc.pk))[:20],
    }
    if htmx_partial(request):
        return render(request, "fleet/_instances.html", context)
    return render(request, "console/service_detail.html", {**context, **explanation(request.user, svc)})


# --- the SLA page ------------------------------------------------------------------------------------
@login_required
def service_sla(request: HttpRequest, name: str) -> HttpResponse:
    svc = service_for(request.user, name)
    return render(request, "console/service_sla.html", _sla_context(request, svc))


def _sla_context(request: HttpRequest, svc: Service, **extra: Any) -> dict[str, Any]:
    now = timezone.now()
    return {
        "card": service_card(svc, now),
        **explanation(request.user, svc, now),
        "all_incidents": list(svc.incidents.all()[:20]),
        "windows": list(MaintenanceWindow.objects.filter(service=svc, ends_at__gt=now - timedelta(days=7))),
        "can_change": can(request.user, "change", svc),
        "fields": ServiceSettings(svc).fields,
        "now": now,
        **extra,
    }


def _bad(request: HttpRequest, svc: Service, detail: str) -> HttpResponse:
    """A refused form: the page again, with the reason, as a 400 (nothing changed)."""
    return render(request, "console/service_sla.html", _sla_context(request, svc, error=detail), status=400)


@login_required
@require_POST
def settings_update(request: HttpRequest, name: str) -> HttpResponse:
    svc = service_for(request.user, name)
    if not can(request.user, "change", svc):
        raise PermissionDenied("You may not change this service.")
    form = ServiceSettings(svc, request.POST)
    if not form.is_valid():
        return _bad(request, svc, form.problem())
    changes = {k: v for attr in form.forms for k, v in form.cleaned(attr).items()}
    try:
        actions.update_service_settings(svc, changes, actor=request.user)
    except autoscaling_actions.ScalingRefused as exc:  # may change, may not scale: the page says why
        note_refusal(str(exc))  # audited as a denied access (audit.middleware), bounded per source
        return render(request, "console/service_sla.html", _sla_context(request, svc, error=str(exc)), status=403)
    except ValidationError as exc:  # a concurrent edit made the combination invalid
        return _bad(request, svc, "; ".join(f"{k.replace('_', ' ')}: {' '.join(v)}"
                                            for k, v in exc.message_dict.items()))
    messages.success(request, f"Settings of {svc.name} saved.")
    return redirect("service-sla", name=svc.name)


@login_required
@require_POST
def maintenance_create(request: HttpRequest, name: str) -> HttpResponse:
    svc = service_for(request.user, name, "scale")
    form = MaintenanceForm(request.POST)
    if not form.is_valid():
        return _bad(request, svc, " ".join(e for errs in form.errors.values() for e in errs))
    starts = form.cleaned_data["starts_at"] or timezone.now()
    health_actions.create_maintenance_window(
        svc, starts_at=starts, ends_at=starts + timedelta(minutes=form.cleaned_data["minutes"]),
        reason=form.cleaned_data["reason"], actor=request.user)
    messages.success(request, f"Maintenance window for {svc.name} scheduled.")
    return redirect("service-sla", name=svc.name)


@login_required
@require_POST
def maintenance_end(request: HttpRequest, window_id: int) -> HttpResponse:
    window = get_object_or_404(MaintenanceWindow.objects.select_related("service"), pk=window_id)
    svc = service_for(request.user, window.service.name, "scale")
    if window.ends_at <= timezone.now():
        return _bad(request, svc, "That maintenance window is already over.")
    health_actions.end_maintenance_window(window, actor=request.user)
    messages.success(request, "Maintenance window ended.")
    return redirect("service-sla", name=svc.name)


@login_required
@require_POST
def override_create(request: HttpRequest, name: str) -> HttpResponse:
    """A manual scale that pauses the autoscaler, for a TTL or until cleared."""
    svc = service_for(request.user, name, "scale")
    form = OverrideForm(request.POST)
    if not form.is_valid():
        return _bad(request, svc, " ".join(e for errs in form.errors.values() for e in errs))
    instances, ttl = form.cleaned_data["instances"], form.cleaned_data["ttl_minutes"] or 0
    outcome = fleet_actions.scale_service(svc, instances, actor=request.user, reason=autoscaling_actions.HOLD_REASON)
    if not outcome.applied:
        return _bad(request, svc, outcome.decision.detail)
    autoscaling_actions.create_scale_override(svc, owner=request.user.get_username(), instances=instances,
                                              ttl_seconds=ttl * 60 or None, actor=request.user,
                                              reason=form.cleaned_data["reason"])
    messages.success(request, f"{svc.name} held at {instances} instances" + (f" for {ttl} min." if ttl else "."))
    return redirect_back(request, f"/services/{svc.name}/sla/")


@login_required
@require_POST
def override_clear(request: HttpRequest, name: str) -> HttpResponse:
    svc = service_for(request.user, name, "scale")
    cleared = [autoscaling_actions.clear_scale_override(ov, actor=request.user, reason="cleared from the page")
               for ov in ScaleOverride.objects.filter(service=svc, cleared_at__isnull=True)]
    messages.success(request, "The autoscaler resumes." if any(cleared) else "No override was active.")
    return redirect_back(request, f"/services/{svc.name}/sla/")
