"""REST endpoints for schedules and a flow's run history: GET/POST /mgmt/flows/{flowId}/schedules,
PATCH/DELETE /mgmt/schedules/{id}, GET /mgmt/flows/{flowId}/stats."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.contrib.auth import get_user_model
from django.http import HttpRequest
from ninja import Field, Path, Router, Schema
from pydantic import ConfigDict, StrictBool, StrictStr

from core.errors import ApiError
from core.numbers import WholeNumber
from core.openapi import NO_NUL, STORABLE_JSON_MARK, documented
from schedules import actions, selectors, serializers
from schedules.cadence import Invalid
from workflows.history import flow_stats
from workflows.selectors import flow_for

router = Router(tags=["schedules"])
FLOW_ID = Path(..., example="reportingFlow", pattern=NO_NUL, max_length=100, description="the flow id")
SCHEDULE_ID = Path(..., example=7, description="the schedule's id")
_JSON = {"propertyNames": {"pattern": NO_NUL}, "additionalProperties": STORABLE_JSON_MARK}


class ScheduleIn(Schema):
    # An unknown field is a 400 naming it, not ignored; exactly one of cron and intervalSeconds,
    # said in the schema too.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"required": ["cron"], "properties": {"cron": {"type": "string"}}},
        {"required": ["intervalSeconds"], "properties": {"intervalSeconds": {"type": "integer"}}}]})

    name: StrictStr = Field("", max_length=100, json_schema_extra={"pattern": NO_NUL})
    cron: StrictStr | None = Field(None, max_length=200, description="5 fields, or 6 with seconds last "
                                   "('* * * * * *': every second); give this or intervalSeconds",
                                   json_schema_extra={"pattern": NO_NUL})
    intervalSeconds: WholeNumber | None = Field(None, description="every N seconds (≥ 1), aligned to the Unix epoch",
                                           json_schema_extra={"minimum": 1, "maximum": 31622400})
    timezone: StrictStr = Field("UTC", max_length=64, description="IANA zone the cron expression is read in",
                                json_schema_extra={"pattern": NO_NUL})
    data: dict[str, Any] = Field(default_factory=dict, description="input of each run", json_schema_extra=_JSON)
    enabled: StrictBool = True
    missedPolicy: Literal["skip", "once", "each"] = Field("once", description="fires missed while the "
                                                          "controller was down: none, one, or each (up to missedBound)")
    missedBound: WholeNumber = Field(10, description="at most this many missed fires run (policy each), 1–100")
    overlapPolicy: Literal["skip", "queue", "allow"] = Field("skip", description="while this schedule's previous "
                                                             "run is active: skip the fire, hold it until the run "
                                                             "ends, or start anyway")
    deadline: dict[str, Any] | None = Field(None, description="deadline spec passed to each run's start",
                                            json_schema_extra=_JSON)
    owner: StrictStr | None = Field(None, max_length=150, description="username the runs act as (default: you; "
                                    "only an administrator names another)", json_schema_extra={"pattern": NO_NUL})


class SchedulePatch(ScheduleIn):
    """Only the fields sent change."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=None)


class UpcomingOut(Schema):
    utc: datetime
    local: str = Field(..., description="the same instant in the schedule's time zone (ISO 8601 with offset)")


class FireOut(Schema):
    scheduledFor: datetime
    firedAt: datetime | None
    outcome: Literal["started", "denied", "skipped", "held", "missed"]
    runId: int | None
    reason: str


class ScheduleOut(Schema):
    id: int
    flowId: str
    name: str
    cron: str | None
    intervalSeconds: int | None
    timezone: str
    data: dict[str, Any]
    owner: str
    enabled: bool
    missedPolicy: str
    missedBound: int
    overlapPolicy: str
    deadline: dict[str, Any] | None
    nextFireAt: datetime | None
    upcoming: list[UpcomingOut]
    lastFire: FireOut | None
    fires: list[FireOut]


class DeletedOut(Schema):
    id: int
    deleted: Literal[True]


class FlowWindowOut(Schema):
    days: int
    runs: int = Field(..., description="runs finished in the window")
    succeeded: int
    successRate: float | None
    p50Seconds: float | None
    p95Seconds: float | None
    sampled: int = Field(..., description="durations the percentiles were taken over (the newest 5000 at most)")


class StepStatOut(Schema):
    name: str
    medianSeconds: float | None
    samples: int
    slowest: bool


class RunBarOut(Schema):
    runId: int
    status: str
    createdAt: datetime
    durationSeconds: float | None


class StatsOut(Schema):
    flowId: str
    runs: list[RunBarOut]
    windows: list[FlowWindowOut]
    steps: list[StepStatOut]


EXAMPLE = {
    "id": 7, "flowId": "reportingFlow", "name": "nightly", "cron": "30 2 * * *", "intervalSeconds": None,
    "timezone": "Europe/Berlin", "data": {"dataset": "daily"}, "owner": "bob", "enabled": True,
    "missedPolicy": "once", "missedBound": 10, "overlapPolicy": "skip", "deadline": None,
    "nextFireAt": "2026-04-02T00:30:00Z",
    "upcoming": [{"utc": "2026-04-02T00:30:00Z", "local": "2026-04-02T02:30:00+02:00"}],
    "lastFire": {"scheduledFor": "2026-04-01T00:30:00Z", "firedAt": "2026-04-01T00:30:00.080Z",
                 "outcome": "started", "runId": 42, "reason": ""},
    "fires": [],
}
_INVALID = {400: {"error": "invalid_schedule", "field": "cron",
                  "detail": "cron: '61 * * * *' is not a cron expression (5 fields, or 6 with seconds last)."}}
_NO_FLOW = {404: {"error": "not_found", "detail": "No flow with id 'noSuchFlow'."}}
_NO_SCHEDULE = {404: {"error": "not_found", "detail": "No schedule 7."},
                403: {"error": "forbidden", "detail": "You may not change schedule 7: it is bob's."}}


def _fields(payload: ScheduleIn, *, partial: bool) -> tuple[dict[str, Any], str | None]:
    raw = payload.model_dump(exclude_unset=partial)
    owner = raw.pop("owner", None)
    fields = {serializers.MODEL_NAMES[k]: v for k, v in raw.items()}
    if "cron" in fields:
        fields["cron"] = fields["cron"] or ""
    return fields, owner


def _invalid(exc: Invalid) -> ApiError:
    field = serializers.API_NAMES.get(exc.field, exc.field)
    return ApiError(400, "invalid_schedule", f"{field}: {exc.detail}", field=field)


def _owner(username: str | None, request: HttpRequest) -> Any:
    """The named owner. Only an administrator may name someone else, and that is checked before
    the lookup, so others cannot probe which user names exist (404 or not)."""
    if username is None or username == request.user.get_username():
        return request.user
    if not request.user.is_superuser:
        raise ApiError(400, "invalid_schedule",
                       "owner: Only an administrator may create or hand over a schedule owned by someone else.",
                       field="owner")
    user = get_user_model().objects.filter(username=username).first()
    if user is None:  # an unknown name, as an unknown flow: 404
        raise ApiError(404, "not_found", f"No user '{username[:150]}'.", field="owner")
    return user


@router.get("/flows/{flow_id}/schedules", summary="A flow's schedules, their next five fires and last fires",
            **documented(list[ScheduleOut], errors=(404,), response_example=[EXAMPLE], error_examples=_NO_FLOW))
def list_schedules(request: HttpRequest, flow_id: str = FLOW_ID) -> Any:
    flow = flow_for(request.user, flow_id)
    items = list(selectors.of_flow(flow))
    fires = selectors.last_fires(items)
    return [serializers.schedule_out(s, fires[s.pk]) for s in items]


@router.post(
    "/flows/{flow_id}/schedules",
    summary="Schedule a flow (cron or interval, time zone, policies)",
    description="Needs the run permission on the flow; the schedule is yours (an administrator may name "
                "another owner, who must be able to run the flow). Each fire starts a run as its owner, "
                "through the same policies as POST /mgmt/workflows.",
    **documented(ScheduleOut, errors=(403, 404), body=True, response_example=EXAMPLE,
                 request_example={"cron": "30 2 * * *", "timezone": "Europe/Berlin", "data": {"dataset": "daily"}},
                 error_examples=_NO_FLOW | _INVALID),
)
def create(request: HttpRequest, payload: ScheduleIn, flow_id: str = FLOW_ID) -> Any:
    flow = flow_for(request.user, flow_id, "run")
    fields, owner = _fields(payload, partial=False)
    try:
        s = actions.create_schedule(flow, fields, owner=_owner(owner, request), actor=request.user)
    except Invalid as exc:
        raise _invalid(exc) from None
    return serializers.schedule_out(selectors.schedule_for(request.user, s.pk))


@router.patch(
    "/schedules/{schedule_id}",
    summary="Change a schedule (fields sent only); enabled=false pauses, true resumes",
    **documented(ScheduleOut, errors=(403, 404), body=True, response_example=EXAMPLE,
                 request_example={"enabled": False}, error_examples=_NO_SCHEDULE | _INVALID),
)
def patch(request: HttpRequest, payload: SchedulePatch, schedule_id: int = SCHEDULE_ID) -> Any:
    s = selectors.schedule_for(request.user, schedule_id, "change")
    fields, owner = _fields(payload, partial=True)
    try:
        if set(fields) == {"enabled"}:  # a pause / resume: audited as such
            actions.set_enabled(s, fields["enabled"], actor=request.user)
        else:
            actions.update_schedule(s, fields, actor=request.user,
                                    owner=_owner(owner, request) if owner is not None else None)
    except Invalid as exc:
        raise _invalid(exc) from None
    s = selectors.schedule_for(request.user, schedule_id)
    return serializers.schedule_out(s, selectors.last_fires([s])[s.pk])


@router.delete("/schedules/{schedule_id}", summary="Delete a schedule (its fire records go with it)",
               **documented(DeletedOut, errors=(403, 404), response_example={"id": 7, "deleted": True},
                            error_examples=_NO_SCHEDULE))
def delete(request: HttpRequest, schedule_id: int = SCHEDULE_ID) -> Any:
    s = selectors.schedule_for(request.user, schedule_id, "delete")
    actions.delete_schedule(s, actor=request.user)
    return {"id": schedule_id, "deleted": True}


@router.get(
    "/flows/{flow_id}/stats",
    summary="A flow's run history: last runs, p50/p95 durations and success rate (7 and 30 days), step medians",
    **documented(StatsOut, errors=(404,), error_examples=_NO_FLOW, response_example={
        "flowId": "reportingFlow",
        "runs": [{"runId": 41, "status": "succeeded", "createdAt": "2026-04-01T00:30:00Z", "durationSeconds": 4.2}],
        "windows": [{"days": 7, "runs": 7, "succeeded": 6, "successRate": 0.8571, "p50Seconds": 4.1,
                     "p95Seconds": 9.8, "sampled": 7}],
        "steps": [{"name": "validation", "medianSeconds": 3.0, "samples": 7, "slowest": True}]}),
)
def stats(request: HttpRequest, flow_id: str = FLOW_ID) -> Any:
    flow = flow_for(request.user, flow_id)
    return flow_stats(flow.slug)
