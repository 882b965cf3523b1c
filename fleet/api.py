"""REST endpoints for services: POST /mgmt/scale, GET /mgmt/services[/{name}]."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja import Field, Router, Schema
from pydantic import StrictBool, StrictInt, StrictStr

from core.errors import PolicyViolation
from fleet import actions, reconcile
from fleet.models import Instance, Service
from fleet.reconcile import converge_now
from fleet.selectors import service_for

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
    return [service_out(s, with_instances=False) for s in Service.objects.restrict(request.user)]


@router.get("/services/{name}", response=ServiceOut, summary="One service with its instances")
def get_service(request: HttpRequest, name: str) -> Any:
    return service_out(service_for(request.user, name), with_instances=True)


