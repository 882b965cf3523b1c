"""SLA pages of slo: the overview (a table, one line per service: status, uptime 24 h / 30 d,
budget left, burn, a sparkline; paged, sorted, filtered; open incidents; alert channels),
acknowledging an incident, alert channels. A service's own SLA page (the full charts, service_card)
joins slo, health and autoscaling and lives in console."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from core.http import redirect_back
from core.permissions import can, can_many
from fleet.forms import form_problem
from fleet.models import Instance, Service
from fleet.selectors import service_for
from slo import actions, sla
from slo.charts import budget_view, latency_chart, sparkline, uptime_bars
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


PAGE_SIZE = 50
SORTS = ("name", "status", "uptime_24h", "uptime_30d", "budget", "burn")


@login_required
def sla_overview(request: HttpRequest) -> HttpResponse:
    return render(request, "slo/sla.html", _overview_context(request))


def _sort_key(key: str) -> Any:
    def value(row: dict[str, Any]) -> Any:
        if key == "name":
            return row["service"].name.lower()
        if key == "status":
            return sla.STATUS_ORDER[row["status"]]
        return row[key]
    return value


def _ordered(rows: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    """Sorted by one column (a leading "-": descending); lines without a figure go last either way."""
    key = sort.lstrip("-")
    value = _sort_key(key)
    known = [r for r in rows if value(r) is not None]
    known.sort(key=value, reverse=sort.startswith("-"))
    return known + [r for r in rows if value(r) is None]


def _overview_context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    now = timezone.now()
    visible = Service.objects.restrict(request.user).select_related("objectives").annotate(
        live_running=Count("instances", filter=Q(instances__state=Instance.State.RUNNING))).order_by("name")
    q = request.GET.get("q", "").strip()[:63]
    services = list(visible.filter(name__icontains=q) if q else visible)
    rows = sla.table_rows(services, now=now)
    status = request.GET.get("status", "")
    if status in sla.STATUS_ORDER:
        rows = [r for r in rows if r["status"] == status]
    sort = request.GET.get("sort", "status")
    if sort.lstrip("-") not in SORTS:
        sort = "status"
    page = Paginator(_ordered(rows, sort), PAGE_SIZE).get_page(request.GET.get("page"))
    lines = list(page.object_list)
    # Sparklines for this page only: two queries for its services, whatever the fleet size.
    hourly = sla.fleet_hourly_uptime([r["service"].pk for r in lines], 24, now=now)
    for row in lines:
        row["spark"] = sparkline(hourly[row["service"].pk], row["service"].objectives.uptime_objective)
        row["budget_view"] = budget_view(row["budget"])
    ids = [svc.pk for svc in services]
    incidents = list(Incident.objects.filter(service_id__in=ids).select_related("service")[:30])
    return {
        "rows": lines,
        "page": page,
        "sort": sort,
        "q": q,
        "status": status if status in sla.STATUS_ORDER else "",
        "statuses": list(sla.STATUS_ORDER),
        "sort_columns": [("name", "Service"), ("status", "Status"), ("uptime_24h", "Uptime 24 h"),
                         ("uptime_30d", "30 d"), ("budget", "Budget left (30 d)"), ("burn", "Burn 1 h")],
        "shown": len(rows),
        "incidents": incidents,
        # Global channels and those of services the user sees (not another team's webhooks).
        "channels": list(AlertChannel.objects.select_related("service").filter(
            Q(service__isnull=True) | Q(service__in=Service.objects.restrict(request.user).values("pk"))))
        if can(request.user, "view", AlertChannel()) else [],
        "can_channels": can(request.user, "add", AlertChannel()),
        # Who may acknowledge: asked for the (at most 30) incidents' services, not the whole fleet.
        "scalable": can_many(request.user, "scale", {i.service_id: i.service for i in incidents}.values()),
        "services": services,
        **extra,
    }


@login_required
@require_POST
def acknowledge(request: HttpRequest, incident_id: int) -> HttpResponse:
    inc = get_object_or_404(Incident.objects.select_related("service"), pk=incident_id, service__isnull=False)
    service_for(request.user, inc.service.name, "scale")  # 404 if unseen, 403 if not an operator
    if actions.acknowledge_incident(inc, actor=request.user):
        messages.success(request, f"Incident #{inc.pk} acknowledged.")
    else:
        messages.error(request, f"Incident #{inc.pk} is already {inc.status}.")
    return redirect_back(request, "sla-overview")


@login_required
@require_POST
def channel_create(request: HttpRequest) -> HttpResponse:
    # A service named must be one the user sees (404 otherwise: before, an unseen name silently made
    # the channel global); a channel for every service hears of services its creator may not
    # see, so it needs the global slo.add_global_alertchannel as well.
    name = request.POST.get("service", "")
    service = service_for(request.user, name[:63]) if name else None
    if not can(request.user, "add", AlertChannel()):
        raise PermissionDenied("You may not add alert channels.")
    if service is None and not request.user.has_perm("slo.add_global_alertchannel"):
        raise PermissionDenied("You may not add alert channels for every service: name a service.")
    form = AlertChannelForm(request.POST)
    if not form.is_valid():
        return render(request, "slo/sla.html", _overview_context(request, error=form_problem(form)), status=400)
    channel = form.save(commit=False)
    channel.service = service
    actions.save_alert_channel(channel, actor=request.user)
    messages.success(request, f"Alert channel {channel.name} added.")
    return redirect("sla-overview")


@login_required
@require_POST
def channel_delete(request: HttpRequest, channel_id: int) -> HttpResponse:
    channel = get_object_or_404(AlertChannel.objects.select_related("service"), pk=channel_id)
    if channel.service is not None:
        service_for(request.user, channel.service.name)  # a channel of a service not seen: 404
    if not can(request.user, "delete", channel):
        raise PermissionDenied("You may not delete alert channels.")
    actions.delete_alert_channel(channel, actor=request.user)
    messages.success(request, f"Alert channel {channel.name} deleted.")
    return redirect("sla-overview")
