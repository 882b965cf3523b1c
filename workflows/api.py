"""REST endpoints for workflows: start (the chapter's contract), status, list, cancel, retry, approve."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.core.paginator import Paginator
from django.http import Http404, HttpRequest
from ninja import Field, Path, Query, Router, Schema, Status
from pydantic import ConfigDict, StrictBool, StrictStr

from core.errors import ApiError, PolicyViolation
from core.numbers import WholeNumber
from core.openapi import NO_NUL, RUN_POLICIES, STORABLE_BODY, STORABLE_JSON_MARK, DecisionOut, documented
from core.permissions import restrict
from workflows import actions, queue, serializers
from workflows.models import StepRun, WorkflowRun
from workflows.selectors import flow_for, run_for

router = Router(tags=["workflows"])


class StartIn(Schema):
    model_config = ConfigDict(json_schema_extra=STORABLE_BODY)

    flowId: StrictStr = Field(..., min_length=1, max_length=100, description="flow id, e.g. exportPatientData",
                              json_schema_extra={"pattern": NO_NUL})
    data: dict[str, Any] = Field(default_factory=dict, description="input for the run", json_schema_extra={
        "propertyNames": {"pattern": NO_NUL}, "additionalProperties": STORABLE_JSON_MARK})


class StartOut(Schema):
    runId: int
    status: Literal["started"]


class QueuePolicyOut(Schema):
    name: str = Field(..., description="the quota that queued the run")
    limit: int
    current: int = Field(..., description="its runs active when this one was queued")
    perUser: bool
    detail: str


class QueuedOut(Schema):
    runId: int
    status: Literal["queued"]
    position: int = Field(..., description="place in line: 1 = the next to start when a slot frees")
    policy: QueuePolicyOut


QUEUED_EXAMPLE = {"runId": 43, "status": "queued", "position": 3, "policy": {
    "name": "analytics jobs per user ≤ 5", "limit": 5, "current": 5, "perUser": True,
    "detail": "5 of 5 analytics runs already active for alice; 2 queued ahead."}}

RunStatus = Literal["queued", "pending", "running", "paused", "succeeded", "failed", "cancelled"]
StepStatus = Literal["pending", "queued", "running", "retrying", "waiting", "succeeded", "failed", "cancelled",
                     "skipped"]


class StepOut(Schema):
    name: str
    action: str
    status: StepStatus
    optional: bool
    triggerRule: Literal["all_success", "all_done", "one_failed"] = "all_success"
    dependsOn: list[str]
    attempts: int
    maxAttempts: int
    queuedAt: datetime | None
    startedAt: datetime | None
    finishedAt: datetime | None
    nextAttemptAt: datetime | None = Field(..., description="when a retrying step is re-queued")
    output: Any = Field(..., description="what the step returned (any JSON), null until it succeeds")
    error: str


class RunOut(Schema):
    runId: int
    flowId: str
    status: RunStatus
    actor: str | None
    actingAs: str | None = Field(None, description="whose rights the steps act with (the last retrier)")
    data: dict[str, Any]
    error: str
    createdAt: datetime
    pausedAt: datetime | None = None
    startedAt: datetime | None
    finishedAt: datetime | None
    position: int | None = Field(None, description="a queued run's place in line (1 = next); null otherwise")
    queue: str | None = Field(None, description="a queued run's place in words, e.g. \"3rd in line behind alice's "
                              "runs 41, 42 (analytics jobs per user ≤ 5: 5 running)\"")
    deadlineAt: datetime | None = Field(None, description="when the run must have finished (the flow's deadline)")
    deadlineIncident: int | None = Field(None, description="the incident its missed deadline opened")
    steps: list[StepOut]


class RunItemOut(Schema):
    runId: int
    flowId: str
    status: RunStatus
    actor: str | None
    createdAt: datetime
    finishedAt: datetime | None
    position: int | None = Field(None, description="a queued run's place in line")


class RunListOut(Schema):
    count: int = Field(..., description="runs matching the filters")
    page: int
    pages: int
    items: list[RunItemOut]


_STEP = {"name": "ingest", "action": "http", "status": "succeeded", "optional": False, "dependsOn": [],
         "attempts": 1, "maxAttempts": 3, "queuedAt": "2026-04-01T09:30:00.125Z",
         "startedAt": "2026-04-01T09:30:00.140Z", "finishedAt": "2026-04-01T09:30:00.410Z", "nextAttemptAt": None,
         "output": {"status": 200}, "error": ""}
RUN_EXAMPLE = {
    "runId": 42, "flowId": "reportingFlow", "status": "running", "actor": "alice", "data": {"user": 123},
    "error": "", "createdAt": "2026-04-01T09:30:00.100Z", "startedAt": "2026-04-01T09:30:00.125Z",
    "finishedAt": None,
    "steps": [_STEP, _STEP | {"name": "validation", "action": "python", "status": "running", "dependsOn": ["ingest"],
                              "finishedAt": None, "output": None}],
}
_NO_RUN = {404: {"error": "not_found", "detail": "No run 42."}}
RUN_ID = Path(..., example=42, description="the runId POST /mgmt/workflows answered")


def _start_docs() -> dict[str, Any]:
    docs = documented(
        StartOut | DecisionOut, errors=(403, 404), policy=RUN_POLICIES, body=True,
        request_example={"flowId": "reportingFlow", "data": {"user": 123}},
        response_example={"runId": 42, "status": "started"},
        error_examples={404: {"error": "not_found", "detail": "No flow with id 'noSuchFlow'."}},
    )
    docs["response"][202] = QueuedOut
    docs["openapi_extra"]["responses"][202] = {
        "description": "Queued: a \"when full: queue\" quota is full (or others already wait); the run starts by "
                       "itself, in FIFO order per scope, when a slot frees",
        "content": {"application/json": {"example": QUEUED_EXAMPLE}}}
    return docs


@router.post(
    "/workflows",
    summary="Start a workflow run",
    description=(
        "The chapter's call: `{flowId, data}` → `{runId, status: \"started\"}`; the run goes on in the "
        "workers (GET /mgmt/workflows/{runId} for its steps). `?dry_run=1` only asks the policies (a 200 "
        "DecisionOut). A quota refusal is 429 with the policy's limit and current count; a change freeze 409. "
        "Beyond a quota that says \"when full: queue\" the answer is 202 `{runId, status: \"queued\", position, "
        "policy}`: the run waits in line and starts when a slot frees (past HMS_RUN_QUEUE_MAX waiting: 429)."
    ),
    **_start_docs(),
)
def start(request: HttpRequest, payload: StartIn, dry_run: bool = False) -> Any:
    flow = flow_for(request.user, payload.flowId, "run")
    outcome = actions.start_run(flow, payload.data, actor=request.user, dry_run=dry_run)
    if dry_run:
        return outcome.decision.as_dict() | {"dryRun": True}
    if outcome.queued:
        assert outcome.run is not None and outcome.decision.queue is not None
        q = outcome.decision.queue
        return Status(202, {"runId": outcome.run.pk, "status": "queued", "position": outcome.position,
                            "policy": {"name": q["policy"], "limit": q["limit"], "current": q["current"],
                                       "perUser": q["perUser"], "detail": outcome.decision.detail}})
    if not outcome.decision.allowed:
        raise PolicyViolation(outcome.decision)
    assert outcome.run is not None
    return {"runId": outcome.run.pk, "status": "started"}


@router.get(
    "/workflows",
    summary="Runs you may see (filter by status, flowId; paginated)",
    **documented(RunListOut, response_example={"count": 1, "page": 1, "pages": 1, "items": [
        {k: RUN_EXAMPLE[k] for k in ("runId", "flowId", "status", "actor", "createdAt", "finishedAt")}]}),
)
def list_runs(
    request: HttpRequest,
    status: Literal["", RunStatus] = Query("", description="only runs in this status"),
    flowId: str = Query("", max_length=100, pattern=NO_NUL, description="only runs of this flow",
                        example="reportingFlow"),
    page: int = Query(1, ge=1, le=1_000_000_000, description="page number (past the last: no items)"),
    per_page: int = Query(50, ge=1, le=200, description="runs per page"),
) -> Any:
    qs = restrict(WorkflowRun.objects.select_related("actor"), request.user).order_by("-id")
    if status:
        qs = qs.filter(status=status)
    if flowId:
        qs = qs.filter(flow_slug=flowId)
    pages = Paginator(qs, per_page)
    items = list(pages.page(page).object_list) if page <= max(pages.num_pages, 1) else []
    where = queue.places(items)
    return {
        "count": pages.count,
        "page": page,
        "pages": pages.num_pages,
        "items": [
            {"runId": r.pk, "flowId": r.flow_slug, "status": r.status,
             "actor": r.actor.get_username() if r.actor else None, "createdAt": r.created_at,
             "finishedAt": r.finished_at, "position": where[r.pk].position if r.pk in where else None}
            for r in items
        ],
    }


class BulkFilterIn(Schema):
    status: Literal["", RunStatus] = ""
    flowId: StrictStr = Field("", max_length=100, json_schema_extra={"pattern": NO_NUL})


class BulkIn(Schema):
    # Exactly one of runIds and filter, said in the schema too, so clients (and schemathesis) know.
    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["runIds"], "properties": {"runIds": {"type": "array"}}},
        {"required": ["filter"], "properties": {"filter": {"type": "object"}}}]})

    op: Literal["cancel", "retry"]
    runIds: list[WholeNumber] | None = Field(None, max_length=500, description="these runs (at most 500) ...",
                                   json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}})
    filter: BulkFilterIn | None = Field(None, description="... or every run matching this filter (500 per call)")


class BulkOut(Schema):
    op: Literal["cancel", "retry"]
    done: list[int]
    refused: dict[str, list[int]] = Field(..., description="reason -> run ids")
    left: int = Field(..., description="matching runs beyond the 500 of one call, not touched")
    summary: str


@router.post(
    "/workflows/bulk",
    summary="Cancel or retry many runs: the given ids, or every run matching a filter",
    description=("Each run is permission-checked and audited on its own, as one click on it would be; a refusal "
                 "of one leaves the others alone. The answer counts what was done and what was refused, and why."),
    **documented(BulkOut, body=True, request_example={"op": "cancel", "runIds": [41, 42, 43]},
                 response_example={"op": "cancel", "done": [41, 42], "refused": {"not active": [43]}, "left": 0,
                                   "summary": "2 cancelled, 1 refused: not active"}),
)
def bulk(request: HttpRequest, payload: BulkIn) -> Any:
    if (payload.runIds is None) == (payload.filter is None):
        raise ApiError(400, "invalid_request", "Give either runIds or filter, not both and not neither.")
    if payload.runIds is not None and any(not 0 < i < 2**63 for i in payload.runIds):
        raise ApiError(400, "invalid_request", "runIds are positive run ids (below 2^63).")
    qs = restrict(WorkflowRun.objects.select_related("actor"), request.user).order_by("-id")
    if payload.filter is not None:
        if payload.filter.status:
            qs = qs.filter(status=payload.filter.status)
        if payload.filter.flowId:
            qs = qs.filter(flow_slug=payload.filter.flowId)
    else:
        qs = qs.filter(pk__in=payload.runIds)
    runs = list(qs[:actions.BULK_MAX])
    left = qs.count() - len(runs) if len(runs) == actions.BULK_MAX else 0
    missing = sorted(set(payload.runIds) - {r.pk for r in runs}) if payload.runIds is not None else []
    scope = {"runs": payload.runIds} if payload.runIds is not None else {
        "status": payload.filter.status, "flow": payload.filter.flowId}  # type: ignore[union-attr]
    outcome = actions.bulk_runs(payload.op, runs, actor=request.user, scope=scope, left=left, missing=missing)
    return {"op": outcome.op, "done": outcome.done, "refused": outcome.refused, "left": outcome.left,
            "summary": outcome.summary()}


@router.get("/workflows/{run_id}", summary="A run's status with its steps",
            **documented(RunOut, errors=(404,), response_example=RUN_EXAMPLE, error_examples=_NO_RUN))
def get_run(request: HttpRequest, run_id: int = RUN_ID) -> Any:
    return serializers.run_summary(run_for(request.user, run_id))


@router.post(
    "/workflows/{run_id}/cancel",
    summary="Cancel a run: pending steps never start",
    **documented(RunOut, errors=(403, 404, 409), body=True, error_examples=_NO_RUN,
                 response_example=RUN_EXAMPLE | {"status": "cancelled", "finishedAt": "2026-04-01T09:31:00.000Z"}),
)
def cancel(request: HttpRequest, run_id: int = RUN_ID) -> Any:
    run = run_for(request.user, run_id, "cancel")
    if not actions.cancel_run(run, actor=request.user):
        raise ApiError(409, "not_active", f"Run {run_id} has already finished ({run.status}).")
    run.refresh_from_db()
    return serializers.run_summary(run)


@router.post(
    "/workflows/{run_id}/retry",
    summary="Retry a failed or cancelled run from the failed step",
    description=("Acts with the caller's rights, checked now: `run` on the flow (403 `forbidden`), the flow "
                 "enabled (409 `flow_disabled`), the run policies; a run with a rejected approval is final "
                 "(409 `not_retryable`). From then on the run's steps act as the caller."),
    **documented(RunOut, errors=(403, 404, 409), policy=RUN_POLICIES, body=True, response_example=RUN_EXAMPLE,
                 error_examples=_NO_RUN | {409: {"error": "not_retryable",
                                                 "detail": "Run 42 is running; only a failed or cancelled run "
                                                           "can be retried."}}),
)
def retry(request: HttpRequest, run_id: int = RUN_ID) -> Any:
    run = run_for(request.user, run_id, "retry")
    try:
        outcome = actions.retry_run(run, actor=request.user)
    except actions.Refused as exc:
        raise ApiError(exc.status, exc.code, exc.detail) from None
    if outcome.refused is not None:
        raise ApiError(outcome.refused.status, outcome.refused.code, outcome.refused.detail)
    if not outcome.decision.allowed:
        raise PolicyViolation(outcome.decision)
    run.refresh_from_db()
    return serializers.run_summary(run)


class ApproveIn(Schema):
    model_config = ConfigDict(json_schema_extra=STORABLE_BODY)

    approve: StrictBool = Field(..., description="true approves the step, false rejects it")
    comment: StrictStr = Field("", max_length=500, json_schema_extra={"pattern": NO_NUL})


@router.post(
    "/workflows/{run_id}/steps/{name}/approve",
    summary="Approve or reject a waiting approval step",
    description=("Four eyes: the run's starter may not decide (403 `self_approval`) unless the step says "
                 "`allow_self_approval: true`; a step naming `approvers` (a group, a permission) is decided "
                 "only by them (403 `not_an_approver`). A rejection is final for the run."),
    **documented(RunOut, errors=(403, 404, 409), body=True, response_example=RUN_EXAMPLE,
                 request_example={"approve": True, "comment": "checked the export"},
                 error_examples=_NO_RUN | {
                     409: {"error": "not_waiting", "detail": "Step 'signoff' is not waiting for a decision."},
                     403: {"error": "self_approval", "detail": "Step 'signoff' needs a second person: alice "
                                                               "started run 42 and may not decide its approval."}}),
)
def approve(request: HttpRequest, payload: ApproveIn, run_id: int = RUN_ID,
            name: str = Path(..., example="signoff", pattern=NO_NUL)) -> Any:
    run = run_for(request.user, run_id, "approve")
    try:
        actions.decide_approval(run, name, approve=payload.approve, actor=request.user, comment=payload.comment)
    except StepRun.DoesNotExist:
        raise Http404(f"Run {run_id} has no step '{name}'.") from None
    except actions.Refused as exc:
        raise ApiError(exc.status, exc.code, exc.detail) from None
    run.refresh_from_db()
    return serializers.run_summary(run)


@router.post(
    "/workflows/{run_id}/pause",
    summary="Pause a run: no pending step starts until it is resumed; running steps finish",
    **documented(RunOut, errors=(403, 404, 409), body=True, error_examples=_NO_RUN | {409: {
        "error": "not_active", "detail": "Run 42 has finished (succeeded); only a pending or running run can be "
                                         "paused."}},
        response_example=RUN_EXAMPLE | {"status": "paused", "pausedAt": "2026-04-01T09:30:30.000Z"}),
)
def pause(request: HttpRequest, run_id: int = RUN_ID) -> Any:
    run = run_for(request.user, run_id, "pause")
    try:
        actions.pause_run(run, actor=request.user)
    except actions.Refused as exc:
        raise ApiError(exc.status, exc.code, exc.detail) from None
    run.refresh_from_db()
    return serializers.run_summary(run)


@router.post(
    "/workflows/{run_id}/resume",
    summary="Resume a paused run: the steps whose dependencies are met start at once",
    **documented(RunOut, errors=(403, 404, 409), body=True, response_example=RUN_EXAMPLE,
                 error_examples=_NO_RUN | {409: {"error": "not_paused", "detail": "Run 42 is running, not paused."}}),
)
def resume(request: HttpRequest, run_id: int = RUN_ID) -> Any:
    run = run_for(request.user, run_id, "pause")
    try:
        actions.resume_run(run, actor=request.user)
    except actions.Refused as exc:
        raise ApiError(exc.status, exc.code, exc.detail) from None
    run.refresh_from_db()
    return serializers.run_summary(run)
