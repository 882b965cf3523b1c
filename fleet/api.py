"""REST endpoints for services: POST /mgmt/scale, GET /mgmt/services[/{name}].

The reads cost a fixed number of queries whatever the fleet size: the list is one page (limit,
offset) with its counts annotated on the services' query, the detail derives its counts from the
instances it lists."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import Field, Path, Query, Router, Schema
from pydantic import ConfigDict, StrictBool, StrictStr

from core.errors import PolicyViolation
from core.numbers import WholeNumber
from core.openapi import NO_NUL, SCALE_POLICIES, STORABLE_BODY, DecisionOut, documented
from fleet import actions, reconcile
from fleet.models import Instance, Service
from fleet.reconcile import converge_now
from fleet.selectors import annotate_counts, service_for, status_of, visible_services

router = Router(tags=["services"])

# GET /mgmt/services without `limit`: the whole fleet up to 500 services, so a client written
# before paging (it expects every service) keeps working at any fleet size this console is built for.
LIST_LIMIT = 500
LIST_MAX = 1000
# No fleet comes near it; it keeps offset + limit inside every database's integer, so a huge
# offset is a 400 naming it rather than an overflow in the query.
OFFSET_MAX = 1_000_000_000




class ScaleIn(Schema):
    model_config = ConfigDict(json_schema_extra=STORABLE_BODY)

    service: StrictStr = Field(..., min_length=1, max_length=63, description="service name, e.g. HMS-SVC",
                               json_schema_extra={"pattern": NO_NUL})
    instances: WholeNumber = Field(..., ge=0, le=settings.HMS_MAX_INSTANCES, description="desired instance count")
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


def service_out(svc: Service, st: reconcile.Status) -> dict[str, Any]:
    return {
        "name": svc.name,
        "driver": svc.driver,
        "desired": svc.desired_instances,
        "running": st.running,
        "starting": st.starting,
        "backingOff": st.backing_off,
    }


SERVICE_EXAMPLE = {"name": "HMS-SVC", "driver": "process", "desired": 2, "running": 2, "starting": 0,
                   "backingOff": False}
INSTANCE_EXAMPLE = {"id": 7, "driver": "process", "ref": "41234", "node": "", "address": "127.0.0.1:20001",
                    "state": "running", "health": "healthy", "restarts": 0, "startedAt": "2026-04-01T09:30:00.125Z",
                    "cpuPercent": 0.4, "memoryBytes": 21495808}


@router.post(
    "/scale",
    summary="Set a service's desired instance count",
    description=(
        "The chapter's call. Records the desired count (audited) and converges at once; `wait: true` waits "
        "(bounded by HMS_SCALE_WAIT_SECONDS) until running == desired. `?dry_run=1` only asks the policies "
        "(a 200 DecisionOut, nothing changes). Policy refusals are 409 (change freeze, cooldown) or 422 "
        "(instance bounds, step); 503 when the engine is unreachable (the desired count is kept "
        "and applied when it is back). Nothing changes on a 4xx."
    ),
    **documented(
        ScaleOut | DecisionOut, errors=(403, 404, 503), policy=SCALE_POLICIES, body=True,
        request_example={"service": "HMS-SVC", "instances": 3, "wait": True},
        response_example={"service": "HMS-SVC", "previous": 2, "desired": 3, "running": 3, "starting": 0,
                          "converged": True},
        error_examples={404: {"error": "not_found", "detail": "No service named 'HMS-XYZ'."}},
    ),
)
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


@router.get(
    "/services",
    summary="Services you may see, with counts (paged by limit and offset)",
    description=(
        "Services you may see, by name, with their desired, running and starting counts. "
        f"Paged: `limit` (1–{LIST_MAX}, default {LIST_LIMIT}) services from `offset` (default 0); the "
        "`X-Total-Count` response header is how many you may see in all, so a client pages with "
        "`offset += limit` while `offset < X-Total-Count`. A limit or offset that is not a whole "
        f"number in range (offset ≤ {OFFSET_MAX:,}) is a 400 naming the parameter."
    ),
    **documented(
        list[ServiceOut],
        response_example=[SERVICE_EXAMPLE],
        error_examples={400: {"error": "invalid_request", "detail": "limit: Input should be less than or equal to "
                                                                    f"{LIST_MAX}"}},
        openapi_extra={"responses": {200: {"headers": {"X-Total-Count": {
            "description": "how many services you may see in all (every page)",
            "schema": {"type": "integer", "minimum": 0}, "example": 300}}}}},
    ),
)
def list_services(
    request: HttpRequest,
    response: HttpResponse,
    limit: int = Query(LIST_LIMIT, ge=1, le=LIST_MAX, description=f"services per page (1–{LIST_MAX})"),
    offset: int = Query(0, ge=0, le=OFFSET_MAX, description="services to skip, in name order"),
) -> Any:
    visible = visible_services(request.user)
    response["X-Total-Count"] = str(visible.count())
    return [service_out(s, status_of(s)) for s in annotate_counts(visible)[offset:offset + limit]]


@router.get(
    "/services/{name}",
    summary="One service with its instances",
    **documented(ServiceOut, errors=(404,), response_example=SERVICE_EXAMPLE | {"instances": [INSTANCE_EXAMPLE]},
                 error_examples={404: {"error": "not_found", "detail": "No service named 'HMS-XYZ'."}}),
)
def get_service(request: HttpRequest, name: str = Path(..., example="HMS-SVC", pattern=NO_NUL)) -> Any:
    svc = service_for(request.user, name)
    live = list(svc.instances.filter(state__in=Instance.LIVE_STATES + (Instance.State.STOPPING,)))
    # The counts from the instances just read: the same answer as reconcile.status(svc) without
    # a second query (STOPPING ones are listed but counted in neither).
    running = sum(1 for i in live if i.state == Instance.State.RUNNING)
    starting = sum(1 for i in live if i.state == Instance.State.STARTING)
    return service_out(svc, reconcile.status(svc, live=(running, starting))) | {
        "instances": [instance_out(i) for i in live]}
