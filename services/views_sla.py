"""SLA pages: the overview (uptime bars, latency, budgets, open incidents, alert channels), a
service's SLA page (figures, settings, maintenance, override), the "why N instances" explanation
and the timeline. Charts are server-rendered SVG: the geometry is computed here, the templates
only draw it, so the pages work offline and without JavaScript.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST

from audit.models import AuditEntry
from hmsmgmt.http import redirect_back
from policies.access import can, restrict
from services import actions, sla
from services.api import service_for
from services.models import (
    AlertChannel,
    AutoscaleDecision,
    Incident,
    MaintenanceWindow,
    ScaleOverride,
    Service,
)

GREEN, AMBER, RED, GREY, BLUE = "#2da44e", "#d4a72c", "#cf222e", "#d0d7de", "#1f6feb"

# Settings editable on the service's SLA page, with the type each form value is parsed as.
SETTINGS_FIELDS: dict[str, type] = {
    "probe_interval_seconds": float, "probe_timeout_seconds": float, "failure_threshold": int,
    "success_threshold": int, "uptime_objective": float, "latency_objective_ms": int, "autoscale_enabled": bool,
    "min_instances": int, "max_instances": int, "target_cpu_percent": int, "target_latency_ms": int,
    "target_demand_per_instance": int, "scale_up_max_step": int, "scale_down_max_step": int,
    "scale_up_stabilization_seconds": int, "scale_down_stabilization_seconds": int,
}
OPTIONAL_FIELDS = {"target_cpu_percent", "target_latency_ms", "target_demand_per_instance"}


def htmx_partial(request: HttpRequest) -> bool:
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted


# --- chart geometry ----------------------------------------------------------------------------------
def uptime_bars(points: list[dict[str, Any]], objective: float, *, width: int = 540, height: int = 34) -> dict:
    """One bar per period: green at or above the objective, amber within a point of it, red below,
    grey without probes. Height shows how much of the period was up."""
    n = max(1, len(points))
    gap = 1 if n > 40 else 2
    w = width / n
    bars = []
    for i, p in enumerate(points):
        up = p["uptime"]
        color = GREY if up is None else GREEN if up >= objective else AMBER if up >= objective - 1 else RED
        h = height if up is None else max(4.0, height * up / 100)
        label = "no data" if up is None else f"{up:.3f} % up ({p['probes']} probes)"
        bars.append({"x": round(i * w, 2), "y": round(height - h, 2), "w": round(max(1.0, w - gap), 2),
                     "h": round(h, 2), "color": color, "title": f"{p['label']}: {label}"})
    return {"width": width, "height": height, "bars": bars}


def latency_chart(series: list[dict[str, Any]], objective: int, *, minutes: int = 60, now: datetime | None = None,
                  width: int = 540, height: int = 140) -> dict:
    now = now or timezone.now()
    start = now - timedelta(minutes=minutes)
    values = [v for p in series for v in (p["p50"], p["p95"]) if v is not None]
    top = max([objective * 1.25, *values]) if values else objective * 1.25
    pad = 24

    def xy(at: datetime, v: float) -> str:
        x = pad + (width - pad) * max(0.0, (at - start).total_seconds()) / (minutes * 60)
        y = height - height * min(v, top) / top
        return f"{x:.1f},{y:.1f}"

    def line(key: str) -> str:
        return " ".join(xy(p["at"] + timedelta(seconds=30), p[key]) for p in series if p[key] is not None)

    return {"width": width, "height": height, "pad": pad, "p50": line("p50"), "p95": line("p95"),
            "objective_y": round(height - height * objective / top, 1), "objective": objective,
            "top": round(top), "empty": not values, "minutes": minutes,
            "last_p95": next((p["p95"] for p in reversed(series) if p["p95"] is not None), None)}


def timeline(svc: Service, *, hours: float = 1.0, now: datetime | None = None, width: int = 1000) -> dict:
    """Lanes on one time axis: desired instances (who scaled), fail-overs, incidents, workflow
    demand seen by the autoscaler, and runs touching the service."""
    now = now or timezone.now()
    start = now - timedelta(hours=hours)
    span = (now - start).total_seconds()
    left = 90

    def x(at: datetime) -> float:
        return round(left + (width - left) * max(0.0, (at - start).total_seconds()) / span, 1)

    entries = list(AuditEntry.objects.filter(target_type="services.service", target_id=str(svc.pk),
                                             created_at__gte=start).order_by("created_at", "id"))
    scales = [e for e in entries if e.action == "scale" and e.outcome == AuditEntry.Outcome.SUCCESS]
    level = scales[0].payload.get("from", svc.desired_instances) if scales else svc.desired_instances
    steps: list[tuple[datetime, int, str]] = [(start, int(level), "")]
    for e in scales:
        steps.append((e.created_at, int(e.payload.get("to", level)), e.actor))
    top = max([s[1] for s in steps] + [svc.max_instances if svc.autoscale_enabled else 1, 1])
    lane_h = 46

    def y(count: int) -> float:
        return round(6 + (lane_h - 6) * (1 - count / top), 1)

    path, markers = [], []
    for i, (at, count, actor) in enumerate(steps):
        if i == 0:
            path.append(f"M{x(at)},{y(count)}")
        else:
            path.append(f"H{x(at)} V{y(count)}")
            markers.append({"x": x(at), "y": y(count), "color": BLUE if actor == "system:autoscaler" else AMBER,
                            "title": f"{at:%H:%M:%S} {actor}: {steps[i - 1][1]} → {count}"})
    path.append(f"H{width}")
    failovers = [{"x": x(e.created_at), "title": f"{e.created_at:%H:%M:%S} fail-over of #{e.payload.get('instance')}: "
                  f"{e.payload.get('cause', '')}"} for e in entries if e.action == "failover"]
    incidents = []
    for inc in Incident.objects.filter(service=svc).filter(Q(resolved_at__isnull=True) | Q(resolved_at__gte=start)):
        x0, x1 = x(max(inc.opened_at, start)), x(inc.resolved_at or now)
        incidents.append({"x": x0, "w": max(3.0, x1 - x0), "color": RED if inc.severity == "page" else AMBER,
                          "title": f"{inc.title} ({inc.status})"})
    demand = []
    for d in AutoscaleDecision.objects.filter(service=svc, at__gte=start).order_by("at").only("at", "inputs"):
        value = next((m.get("value") for m in d.inputs.get("metrics", []) if m.get("name") == "demand"), None)
        if value is not None:
            demand.append((d.at, float(value)))
    dtop = max([v for _, v in demand] + [1.0])
    demand_line = " ".join(f"{x(at)},{round(6 + (lane_h - 6) * (1 - v / dtop), 1)}" for at, v in demand)
    ticks = [{"x": x(start + timedelta(seconds=span * k / 6)), "anchor": "start" if k == 0 else "end" if k == 6
              else "middle", "label": f"{start + timedelta(seconds=span * k / 6):%H:%M}"} for k in range(7)]
    return {"width": width, "left": left, "plot_w": width - left, "lane_h": lane_h, "path": " ".join(path),
            "markers": markers,
            "failovers": failovers, "incidents": incidents, "demand": demand_line, "demand_top": dtop,
            "top": top, "ticks": ticks, "hours": hours, "height": lane_h * 4 + 40}


# --- context builders ---------------------------------------------------------------------------------
def service_card(svc: Service, now: datetime) -> dict[str, Any]:
    summary = sla.summary(svc, now=now)
    return {
        "service": svc,
        "summary": summary,
        "days": uptime_bars(sla.daily_uptime(svc, 90, now=now), svc.uptime_objective),
        "hours": uptime_bars(sla.hourly_uptime(svc, 24, now=now), svc.uptime_objective),
        "latency": latency_chart(sla.latency_series(svc, 60, now=now), svc.latency_objective_ms, now=now),
        "budget": {k: budget_view(v) for k, v in summary["budget"].items()},
        "incidents": list(svc.incidents.filter(status__in=Incident.ACTIVE)),
    }


def budget_view(remaining: float | None) -> dict[str, Any]:
    if remaining is None:
        return {"text": "no data", "pct": 0, "color": GREY}
    pct = max(0.0, min(1.0, remaining)) * 100
    color = GREEN if remaining > 0.5 else AMBER if remaining > 0.1 else RED
    return {"text": f"{remaining:.1%}", "pct": round(pct, 1), "color": color}


def explanation(user: Any, svc: Service, now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    latest = svc.autoscale_decisions.first()
    changes = list(svc.autoscale_decisions.filter(applied=True)[:5])
    return {
        "service": svc,
        "decision": latest,
        "recent": list(svc.autoscale_decisions.all()[:8]),
        "changes": changes,
        # An expired override is ended by the autoscaler's next pass; do not show it meanwhile.
        "override": ScaleOverride.objects.filter(service=svc, cleared_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now)).first(),
        "timeline": timeline(svc, now=now),
        "can_scale": can(user, "scale", svc),
    }


# --- pages ---------------------------------------------------------------------------------------------
@login_required
def sla_overview(request: HttpRequest) -> HttpResponse:
    return render(request, "services/sla.html", _overview_context(request))


def _overview_context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    now = timezone.now()
    services = list(restrict(Service.objects.all(), request.user))
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
def service_sla(request: HttpRequest, name: str) -> HttpResponse:
    svc = service_for(request.user, name)
    return render(request, "services/sla_service.html", _service_context(request, svc))


def _service_context(request: HttpRequest, svc: Service, **extra: Any) -> dict[str, Any]:
    now = timezone.now()
    return {
        "card": service_card(svc, now),
        **explanation(request.user, svc, now),
        "all_incidents": list(svc.incidents.all()[:20]),
        "windows": list(MaintenanceWindow.objects.filter(service=svc, ends_at__gt=now - timedelta(days=7))),
        "can_change": can(request.user, "change", svc),
        "fields": [(f, getattr(svc, f)) for f in SETTINGS_FIELDS],
        "now": now,
        **extra,
    }


@login_required
def autoscale_fragment(request: HttpRequest, name: str) -> HttpResponse:
    """The "why N instances" panel and the timeline (htmx refresh of the service page's panel)."""
    svc = service_for(request.user, name)
    return render(request, "services/_autoscale.html", explanation(request.user, svc))


# --- actions from the pages -------------------------------------------------------------------------------
def _back(request: HttpRequest, fallback: str) -> HttpResponse:
    return redirect_back(request, fallback)


def _bad(request: HttpRequest, svc: Service, detail: str) -> HttpResponse:
    """A refused form: the page again, with the reason, as a 400 (nothing changed)."""
    return render(request, "services/sla_service.html", _service_context(request, svc, error=detail), status=400)


@login_required
@require_POST
def acknowledge(request: HttpRequest, incident_id: int) -> HttpResponse:
    inc = get_object_or_404(Incident.objects.select_related("service"), pk=incident_id)
    service_for(request.user, inc.service.name, "scale")  # 404 if unseen, 403 if not an operator
    if actions.acknowledge_incident(inc, actor=request.user):
        messages.success(request, f"Incident #{inc.pk} acknowledged.")
    else:
        messages.error(request, f"Incident #{inc.pk} is already {inc.status}.")
    return _back(request, "sla-overview")


@login_required
@require_POST
def maintenance_create(request: HttpRequest, name: str) -> HttpResponse:
    svc = service_for(request.user, name, "scale")
    try:
        minutes = int(request.POST.get("minutes", ""))
        if not 1 <= minutes <= 7 * 24 * 60:
            raise ValueError
    except ValueError:
        return _bad(request, svc, "Duration must be a whole number of minutes between 1 and 10080.")
    raw_start = request.POST.get("starts_at", "").strip()
    starts = parse_datetime(raw_start) if raw_start else timezone.now()
    if starts is None:
        return _bad(request, svc, "Start must be a date and time like 2026-01-31T22:00.")
    if timezone.is_naive(starts):
        starts = timezone.make_aware(starts)
    actions.create_maintenance_window(svc, starts_at=starts, ends_at=starts + timedelta(minutes=minutes),
                                      reason=request.POST.get("reason", "").strip(), actor=request.user)
    messages.success(request, f"Maintenance window for {svc.name} scheduled.")
    return redirect("service-sla", name=svc.name)


@login_required
@require_POST
def maintenance_end(request: HttpRequest, window_id: int) -> HttpResponse:
    window = get_object_or_404(MaintenanceWindow.objects.select_related("service"), pk=window_id)
    svc = service_for(request.user, window.service.name, "scale")
    if window.ends_at <= timezone.now():
        return _bad(request, svc, "That maintenance window is already over.")
    actions.end_maintenance_window(window, actor=request.user)
    messages.success(request, "Maintenance window ended.")
    return redirect("service-sla", name=svc.name)


@login_required
@require_POST
def override_create(request: HttpRequest, name: str) -> HttpResponse:
    """A manual scale that pauses the autoscaler, for a TTL or until cleared."""
    svc = service_for(request.user, name, "scale")
    try:
        instances = int(request.POST.get("instances", ""))
        ttl = int(request.POST.get("ttl_minutes") or 0)
        if instances < 0 or ttl < 0:
            raise ValueError
    except ValueError:
        return _bad(request, svc, "Instances and TTL must be whole numbers, 0 or more.")
    if (problem := actions.count_error(instances)) is not None:
        return _bad(request, svc, problem)
    outcome = actions.scale_service(svc, instances, actor=request.user, reason="manual override")
    if not outcome.applied:
        return _bad(request, svc, outcome.decision.detail)
    actions.create_scale_override(svc, owner=request.user.get_username(), instances=instances,
                                  ttl_seconds=ttl * 60 or None, actor=request.user,
                                  reason=request.POST.get("reason", "").strip())
    messages.success(request, f"{svc.name} held at {instances} instances" + (f" for {ttl} min." if ttl else "."))
    return _back(request, f"/services/{svc.name}/sla/")


@login_required
@require_POST
def override_clear(request: HttpRequest, name: str) -> HttpResponse:
    svc = service_for(request.user, name, "scale")
    cleared = [actions.clear_scale_override(ov, actor=request.user, reason="cleared from the page")
               for ov in ScaleOverride.objects.filter(service=svc, cleared_at__isnull=True)]
    messages.success(request, "The autoscaler resumes." if any(cleared) else "No override was active.")
    return _back(request, f"/services/{svc.name}/sla/")


@login_required
@require_POST
def settings_update(request: HttpRequest, name: str) -> HttpResponse:
    svc = service_for(request.user, name)
    if not can(request.user, "change", svc):
        raise PermissionDenied("You may not change this service.")
    changes: dict[str, Any] = {}
    for field, kind in SETTINGS_FIELDS.items():
        raw = request.POST.get(field, "").strip()
        if kind is bool:
            changes[field] = raw in ("1", "on", "true")
            continue
        if raw == "" and field in OPTIONAL_FIELDS:
            changes[field] = None
            continue
        try:
            changes[field] = kind(raw)
        except ValueError:
            return _bad(request, svc, f"{field.replace('_', ' ')} must be a number.")
        if changes[field] < 0:
            return _bad(request, svc, f"{field.replace('_', ' ')} must not be negative.")
    try:
        actions.update_sla_settings(svc, changes, actor=request.user)
    except ValidationError as exc:
        detail = "; ".join(f"{k.replace('_', ' ')}: {' '.join(v)}" for k, v in exc.message_dict.items())
        return _bad(request, svc, detail)
    messages.success(request, f"Settings of {svc.name} saved.")
    return redirect("service-sla", name=svc.name)


@login_required
@require_POST
def channel_create(request: HttpRequest) -> HttpResponse:
    if not can(request.user, "add", AlertChannel()):
        raise PermissionDenied("You may not add alert channels.")
    service = None
    if request.POST.get("service"):
        service = restrict(Service.objects.all(), request.user).filter(name=request.POST["service"]).first()
    channel = AlertChannel(name=request.POST.get("name", "").strip(), kind=request.POST.get("kind", ""),
                           target=request.POST.get("target", "").strip(), service=service)
    try:
        channel.full_clean()
        if channel.kind == AlertChannel.Kind.WEBHOOK and not channel.target.startswith(("http://", "https://")):
            raise ValidationError({"target": ["A webhook target must be an http(s) URL."]})
        if channel.kind == AlertChannel.Kind.EMAIL and "@" not in channel.target:
            raise ValidationError({"target": ["An email target must be an address."]})
    except ValidationError as exc:
        detail = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        return render(request, "services/sla.html", _overview_context(request, error=detail), status=400)
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
