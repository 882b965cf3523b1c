"""The autoscaler's explanation ("why N instances": its latest decision with inputs, recent ones,
the override in force) and the service timeline, as a fragment the service pages include and
refresh with htmx."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from audit import events
from audit.models import AuditEntry
from autoscaling.actions import ACTOR
from autoscaling.models import AutoscaleDecision, ScaleOverride
from core.permissions import can
from fleet.models import Service
from fleet.selectors import service_for
from slo.charts import AMBER, BLUE, RED
from slo.models import Incident


def timeline(svc: Service, *, hours: float = 1.0, now: datetime | None = None, width: int = 1000) -> dict:
    """Lanes on one time axis: desired instances (who scaled), fail-overs, incidents, workflow
    demand seen by the autoscaler, and runs touching the service."""
    now = now or timezone.now()
    start = now - timedelta(hours=hours)
    span = (now - start).total_seconds()
    left = 90

    def x(at: datetime) -> float:
        return round(left + (width - left) * max(0.0, (at - start).total_seconds()) / span, 1)

    entries = list(AuditEntry.objects.filter(target_type__in=events.SERVICE_TARGET_TYPES, target_id=str(svc.pk),
                                             created_at__gte=start).order_by("created_at", "id"))
    scales = [e for e in entries if e.action == events.SCALE and e.outcome == AuditEntry.Outcome.SUCCESS]
    level = scales[0].payload.get("from", svc.desired_instances) if scales else svc.desired_instances
    steps: list[tuple[datetime, int, str]] = [(start, int(level), "")]
    for e in scales:
        steps.append((e.created_at, int(e.payload.get("to", level)), e.actor))
    auto = svc.autoscale_settings
    top = max([s[1] for s in steps] + [auto.max_instances if auto.autoscale_enabled else 1, 1])
    lane_h = 46

    def y(count: int) -> float:
        return round(6 + (lane_h - 6) * (1 - count / top), 1)

    path, markers = [], []
    for i, (at, count, actor) in enumerate(steps):
        if i == 0:
            path.append(f"M{x(at)},{y(count)}")
        else:
            path.append(f"H{x(at)} V{y(count)}")
            markers.append({"x": x(at), "y": y(count), "color": BLUE if actor == ACTOR else AMBER,
                            "title": f"{at:%H:%M:%S} {actor}: {steps[i - 1][1]} → {count}"})
    path.append(f"H{width}")
    failovers = [{"x": x(e.created_at), "title": f"{e.created_at:%H:%M:%S} fail-over of #{e.payload.get('instance')}: "
                  f"{e.payload.get('cause', '')}"} for e in entries if e.action == events.FAILOVER]
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


@login_required
def autoscale_fragment(request: HttpRequest, name: str) -> HttpResponse:
    """The "why N instances" panel and the timeline (htmx refresh of the service page's panel)."""
    svc = service_for(request.user, name)
    return render(request, "autoscaling/_autoscale.html", explanation(request.user, svc))


