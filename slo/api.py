"""REST: GET /mgmt/services/{name}/sla, what the SLA page shows, for portals."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from ninja import Path, Router, Schema

from core.openapi import NO_NUL, documented
from fleet.selectors import service_for
from slo import sla
from slo.models import Incident

router = Router(tags=["services"])


class WindowOut(Schema):
    probes: int
    uptimePercent: float | None
    down: int
    slow: int
    p50Ms: float | None
    p95Ms: float | None


class IncidentOut(Schema):
    id: int
    kind: str
    severity: str
    status: str
    title: str
    openedAt: datetime
    acknowledgedAt: datetime | None
    resolvedAt: datetime | None


class SlaOut(Schema):
    service: str
    uptimeObjectivePercent: float
    latencyObjectiveMs: int
    windows: dict[str, WindowOut]
    budgetLeft: dict[str, float | None]
    maintenanceUntil: datetime | None
    incidents: list[IncidentOut]


def incident_out(inc: Incident) -> dict[str, Any]:
    return {"id": inc.pk, "kind": inc.kind, "severity": inc.severity, "status": inc.status, "title": inc.title,
            "openedAt": inc.opened_at, "acknowledgedAt": inc.acknowledged_at, "resolvedAt": inc.resolved_at}


_WINDOW = {"probes": 720, "uptimePercent": 99.86, "down": 1, "slow": 3, "p50Ms": 2.1, "p95Ms": 8.4}
SLA_EXAMPLE = {
    "service": "HMS-SVC", "uptimeObjectivePercent": 99.9, "latencyObjectiveMs": 300,
    "windows": {"1h": _WINDOW, "24h": _WINDOW | {"probes": 17280}, "30d": _WINDOW | {"probes": 518400}},
    "budgetLeft": {"availability": 0.62, "latency": 0.91}, "maintenanceUntil": None,
    "incidents": [{"id": 3, "kind": "availability", "severity": "page", "status": "resolved",
                   "title": "HMS-SVC uptime burn 14.4x over 1 h", "openedAt": "2026-04-01T09:30:00.125Z",
                   "acknowledgedAt": None, "resolvedAt": "2026-04-01T09:52:10.002Z"}],
}


@router.get(
    "/services/{name}/sla",
    summary="A service's SLA: uptime, latency, budgets, incidents",
    **documented(SlaOut, errors=(404,), response_example=SLA_EXAMPLE,
                 error_examples={404: {"error": "not_found", "detail": "No service named 'HMS-XYZ'."}}),
)
def get_service_sla(request: HttpRequest, name: str = Path(..., example="HMS-SVC", pattern=NO_NUL)) -> Any:
    """What the SLA page shows, for a portal: probe windows (1 h, 24 h, 30 d; maintenance excluded),
    the 30-day error budget left per objective (1.0 untouched, 0 or less spent; null before any
    probe), an active maintenance window, and the incidents of the last 30 days, newest first."""
    svc = service_for(request.user, name)
    summary = sla.summary(svc)
    window = summary["maintenance"]
    since = timezone.now() - timedelta(days=30)
    recent = svc.incidents.filter(Q(status__in=Incident.ACTIVE) | Q(opened_at__gte=since)).order_by("-opened_at")
    return {
        "service": svc.name,
        "uptimeObjectivePercent": svc.objectives.uptime_objective,
        "latencyObjectiveMs": svc.objectives.latency_objective_ms,
        "windows": {
            label: {"probes": w.total, "uptimePercent": w.uptime, "down": w.down, "slow": w.slow,
                    "p50Ms": w.p50_ms, "p95Ms": w.p95_ms}
            for label, w in summary["windows"].items()
        },
        "budgetLeft": {str(kind): left for kind, left in summary["budget"].items()},
        "maintenanceUntil": window.ends_at if window else None,
        "incidents": [incident_out(i) for i in recent[:100]],
    }
