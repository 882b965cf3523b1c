"""SLA pages of slo: the overview (one card per service: uptime bars, latency, budgets, open
incidents; alert channels), acknowledging an incident, alert channels. A service's own SLA page
joins slo, health and autoscaling and lives in console."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from core.http import redirect_back
from core.permissions import can
from fleet.forms import form_problem
from fleet.models import Service
from fleet.selectors import service_for
from slo import actions, sla
from slo.charts import budget_view, latency_chart, uptime_bars
from slo.forms import AlertChannelForm
from slo.models import AlertChannel, Incident


def service_card(svc: Service, now: datetime) -> dict[str, Any]:
    summary = sla.summary(svc, now=now)
    return {
        "service": svc,
        "summary": summary,
        "days": uptime_bars(sla.daily_uptime(svc, 90, now=now), svc.objectives.uptime_objective),
        "hours": uptime_bars(sla.hourly_uptime(svc, 24, now=now), svc.objectives.uptime_objective),
        "latency": latency_chart(sla.latency_series(svc, 60, now=now), svc.objectives.latency_objective_ms, now=now),
        "budget": {k: budget_view(v) for k, v in summary["budget"].items()},
        "incidents": list(svc.incidents.filter(status__in=Incident.ACTIVE)),
    }


@login_required
def sla_overview(request: HttpRequest) -> HttpResponse:
    return render(request, "slo/sla.html", _overview_context(request))


def _overview_context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    now = timezone.now()
    services = list(Service.objects.restrict(request.user).select_related("objectives"))
    return {
        "cards": [service_card(svc, now) for svc in services],
        "incidents": list(Incident.objects.filter(service__in=services).select_related("service")[:30]),
        "channels": list(AlertChannel.objects.select_related("service")) if can(request.user, "view", AlertChannel())
        else [],
        "can_channels": can(request.user, "add", AlertChannel()),
        "scalable": {svc.pk for svc in services if can(request.user, "scale", svc)},
        "services": services,
        **extra,
    }


@login_required
@require_POST
def acknowledge(request: HttpRequest, incident_id: int) -> HttpResponse:
    inc = get_object_or_404(Incident.objects.select_related("service"), pk=incident_id)
    service_for(request.user, inc.service.name, "scale")  # 404 if unseen, 403 if not an operator
    if actions.acknowledge_incident(inc, actor=request.user):
        messages.success(request, f"Incident #{inc.pk} acknowledged.")
    else:
        messages.error(request, f"Incident #{inc.pk} is already {inc.status}.")
    return redirect_back(request, "sla-overview")


@login_required
@require_POST
def channel_create(request: HttpRequest) -> HttpResponse:
    if not can(request.user, "add", AlertChannel()):
        raise PermissionDenied("You may not add alert channels.")
    form = AlertChannelForm(request.POST)
    if not form.is_valid():
        return render(request, "slo/sla.html", _overview_context(request, error=form_problem(form)), status=400)
    channel = form.save(commit=False)
    if request.POST.get("service"):
        channel.service = Service.objects.restrict(request.user).filter(name=request.POST["service"]).first()
    actions.save_alert_channel(channel, actor=request.user)
    messages.success(request, f"Alert channel {channel.name} added.")
    return redirect("sla-overview")


@login_required
@require_POST
def channel_delete(request: HttpRequest, channel_id: int) -> HttpResponse:
    channel = get_object_or_404(AlertChannel, pk=channel_id)
    if not can(request.user, "delete", channel):
        raise PermissionDenied("You may not delete alert channels.")
    actions.delete_alert_channel(channel, actor=request.user)
    messages.success(request, f"Alert channel {channel.name} deleted.")
    return redirect("sla-overview")
