"""REST endpoints for services: POST /mgmt/scale, GET /mgmt/services[/{name}]."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.http import Http404, HttpRequest
from django.utils import timezone
from ninja import Field, Router, Schema
from pydantic import StrictBool, StrictInt, StrictStr

from policies.access import get_for_user, restrict
from policies.errors import ApiError, PolicyViolation
from services import actions, reconcile, sla
from services.drivers import EngineUnavailable
from services.locks import LockTimeout
from services.models import Incident, Instance, Service

router = Router(tags=["services"])


class ScaleIn(Schema):
    service: StrictStr = Field(..., min_length=1, max_length=63, description="service name, e.g. HMS-SVC")
    instances: StrictInt = Field(..., ge=0, le=settings.HMS_MAX_INSTANCES, description="desired instance count")
    wait: StrictBool = Field(False, description="wait (bounded) until running == desired")


class InstanceOut(Schema):
    id: int
    driver: str
    ref: str
    node: str
    address: str
    state: str
    health: str
    restarts: int
    startedAt: datetime | None
    cpuPercent: float | None
    memoryBytes: int | None


class ServiceOut(Schema):
    name: str
    driver: str
    desired: int
    running: int
    starting: int
    backingOff: bool
    instances: list[InstanceOut] | None = None


class ScaleOut(Schema):
    service: str
    previous: int
    desired: int
    running: int
    starting: int
    converged: bool


class DecisionOut(Schema):
    dryRun: bool = True
    allowed: bool
    policy: str | None
    kind: str | None
    detail: str
    limit: int | None
    current: int | None
    reasons: list[str]
    checked: list[str]


def service_for(user: Any, name: str, action: str = "view", *, with_counts: bool = False) -> Service:
    """The named service through the permission choke point. with_counts: also its running and
    starting instances (live_running, live_starting), read in the same query."""
    qs = Service.objects.all()
    if with_counts:
        qs = qs.annotate(
            live_running=Count("instances", filter=Q(instances__state=Instance.State.RUNNING)),
            live_starting=Count("instances", filter=Q(instances__state=Instance.State.STARTING)),
        )
    try:
        return get_for_user(qs, user, action, name=name)
    except Http404:
        raise Http404(f"No service named '{name}'.") from None


def instance_out(inst: Instance) -> dict[str, Any]:
    return {
        "id": inst.pk,
        "driver": inst.driver,
        "ref": inst.ref,
        "node": inst.node,
        "address": inst.address,
        "state": inst.state,
        "health": inst.health,
        "restarts": inst.restarts,
        "startedAt": inst.started_at,
        "cpuPercent": inst.cpu_percent,
        "memoryBytes": inst.memory_bytes,
    }


def service_out(svc: Service, *, with_instances: bool) -> dict[str, Any]:
    st = reconcile.status(svc)
    body: dict[str, Any] = {
        "name": svc.name,
        "driver": svc.driver,
        "desired": svc.desired_instances,
        "running": st.running,
        "starting": st.starting,
        "backingOff": st.backing_off,
    }
    if with_instances:
        live = svc.instances.filter(state__in=Instance.LIVE_STATES + (Instance.State.STOPPING,))
        body["instances"] = [instance_out(i) for i in live]
    return body


def converge_now(svc: Service, *, wait: bool) -> reconcile.Status:
    """Converge right away (no need to wait for the controller's tick); with wait, keep going
    until running == desired or the deadline. An unreachable engine is a 503: the desired count
    is already recorded and the controller applies it once the engine is back.

    Every wait is bounded by the deadline (HMS_SCALE_WAIT_SECONDS), the per-service lock included:
    a controller stuck on a hanging engine must not hold the request past it."""
    deadline = time.monotonic() + settings.HMS_SCALE_WAIT_SECONDS
    while True:
        remaining = deadline - time.monotonic()
        try:
            # Without wait, one try: if another converger (the controller, a concurrent request)
            # holds the service, it or the next tick applies the new count; don't queue behind it.
            st = reconcile.converge(svc.pk, component="web",
                                    lock_timeout=max(0.2, remaining) if wait else 0.0)
        except EngineUnavailable as exc:
            raise ApiError(503, "engine_unavailable",
                           f"The {svc.driver} engine is unreachable ({exc}). The desired count "
                           f"{svc.desired_instances} is recorded and will be applied when it is back.") from exc
        except LockTimeout:
            svc.refresh_from_db()
            st = reconcile.status(svc)
        if not wait or st.converged or time.monotonic() > deadline:
            return st
        time.sleep(0.1)


@router.post("/scale", response={200: ScaleOut | DecisionOut}, summary="Set a service's desired instance count")
def scale(request: HttpRequest, payload: ScaleIn, dry_run: bool = False) -> Any:
    svc = service_for(request.user, payload.service, "scale", with_counts=True)
    outcome = actions.scale_service(svc, payload.instances, actor=request.user, dry_run=dry_run)
    if dry_run:
        return outcome.decision.as_dict() | {"dryRun": True}
    if not outcome.decision.allowed:
        raise PolicyViolation(outcome.decision)
    if payload.wait or outcome.previous != payload.instances:
        st = converge_now(outcome.service, wait=payload.wait)
    else:
        # Same count again: nothing for the engine to do now, and the counts read with the
        # service are the answer (no second query on the hot path of a re-assert).
        st = reconcile.status(svc, live=(svc.live_running, svc.live_starting))
    return {
        "service": svc.name,
        "previous": outcome.previous,
        "desired": st.desired,
        "running": st.running,
        "starting": st.starting,
        "converged": st.converged,
    }


@router.get("/services", response=list[ServiceOut], summary="Services you may see, with counts")
def list_services(request: HttpRequest) -> Any:
    return [service_out(s, with_instances=False) for s in restrict(Service.objects.all(), request.user)]


@router.get("/services/{name}", response=ServiceOut, summary="One service with its instances")
def get_service(request: HttpRequest, name: str) -> Any:
    return service_out(service_for(request.user, name), with_instances=True)


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


@router.get("/services/{name}/sla", response=SlaOut, summary="A service's SLA: uptime, latency, budgets, incidents")
def get_service_sla(request: HttpRequest, name: str) -> Any:
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
        "uptimeObjectivePercent": svc.uptime_objective,
        "latencyObjectiveMs": svc.latency_objective_ms,
        "windows": {
            label: {"probes": w.total, "uptimePercent": w.uptime, "down": w.down, "slow": w.slow,
                    "p50Ms": w.p50_ms, "p95Ms": w.p95_ms}
            for label, w in summary["windows"].items()
        },
        "budgetLeft": {str(kind): left for kind, left in summary["budget"].items()},
        "maintenanceUntil": window.ends_at if window else None,
        "incidents": [incident_out(i) for i in recent[:100]],
    }
