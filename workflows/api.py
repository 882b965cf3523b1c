"""REST endpoints for workflows: start (the chapter's contract), status, list, cancel, retry, approve."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.http import Http404, HttpRequest
from ninja import Field, Router, Schema
from pydantic import StrictBool, StrictStr

from core.errors import ApiError, PolicyViolation
from core.permissions import restrict
from workflows import actions, serializers
from workflows.models import StepRun, WorkflowRun
from workflows.selectors import flow_for, run_for

router = Router(tags=["workflows"])


class StartIn(Schema):
    flowId: StrictStr = Field(..., min_length=1, max_length=100, description="flow id, e.g. exportPatientData")
    data: dict[str, Any] = Field(default_factory=dict, description="input for the run")


class StartOut(Schema):
    runId: int
    status: str


@router.post("/workflows", response={200: StartOut | dict}, summary="Start a workflow run")
def start(request: HttpRequest, payload: StartIn, dry_run: bool = False) -> Any:
    flow = flow_for(request.user, payload.flowId, "run")
    outcome = actions.start_run(flow, payload.data, actor=request.user, dry_run=dry_run)
    if dry_run:
        return outcome.decision.as_dict() | {"dryRun": True}
    if not outcome.decision.allowed:
        raise PolicyViolation(outcome.decision)
    assert outcome.run is not None
    return {"runId": outcome.run.pk, "status": "started"}


@router.get("/workflows", summary="Runs you may see (filter by status, flowId; paginated)")
def list_runs(request: HttpRequest, status: str = "", flowId: str = "", page: int = 1, per_page: int = 50) -> Any:
    if status and status not in WorkflowRun.Status.values:
        raise ApiError(400, "invalid_request", f"status must be one of {', '.join(WorkflowRun.Status.values)}")
    if page < 1 or not 1 <= per_page <= 200:
        raise ApiError(400, "invalid_request", "page must be >= 1 and per_page between 1 and 200")
    qs = restrict(WorkflowRun.objects.select_related("actor"), request.user).order_by("-id")
    if status:
        qs = qs.filter(status=status)
    if flowId:
        qs = qs.filter(flow_slug=flowId)
    pages = Paginator(qs, per_page)
    items = pages.page(page).object_list if page <= max(pages.num_pages, 1) else []
    return {
        "count": pages.count,
        "page": page,
        "pages": pages.num_pages,
        "items": [
            {"runId": r.pk, "flowId": r.flow_slug, "status": r.status,
             "actor": r.actor.get_username() if r.actor else None, "createdAt": r.created_at,
             "finishedAt": r.finished_at}
            for r in items
        ],
    }


@router.get("/workflows/{run_id}", summary="A run's status with its steps")
def get_run(request: HttpRequest, run_id: int) -> Any:
    return serializers.run_summary(run_for(request.user, run_id))


@router.post("/workflows/{run_id}/cancel", summary="Cancel a run: pending steps never start")
def cancel(request: HttpRequest, run_id: int) -> Any:
    run = run_for(request.user, run_id, "cancel")
    if not actions.cancel_run(run, actor=request.user):
        raise ApiError(409, "not_active", f"Run {run_id} has already finished ({run.status}).")
    run.refresh_from_db()
    return serializers.run_summary(run)


@router.post("/workflows/{run_id}/retry", summary="Retry a failed or cancelled run from the failed step")
def retry(request: HttpRequest, run_id: int) -> Any:
    run = run_for(request.user, run_id, "retry")
    try:
        outcome = actions.retry_run(run, actor=request.user)
    except actions.RetryRefused as exc:
        raise ApiError(409, "not_retryable", str(exc)) from None
    if not outcome.decision.allowed:
        raise PolicyViolation(outcome.decision)
    run.refresh_from_db()
    return serializers.run_summary(run)


class ApproveIn(Schema):
    approve: StrictBool = Field(..., description="true approves the step, false rejects it")
    comment: StrictStr = Field("", max_length=500)


@router.post("/workflows/{run_id}/steps/{name}/approve", summary="Approve or reject a waiting approval step")
def approve(request: HttpRequest, run_id: int, name: str, payload: ApproveIn) -> Any:
    run = run_for(request.user, run_id, "approve")
    try:
        actions.decide_approval(run, name, approve=payload.approve, actor=request.user, comment=payload.comment)
    except StepRun.DoesNotExist:
        raise Http404(f"Run {run_id} has no step '{name}'.") from None
    except actions.DecisionRefused as exc:
        raise ApiError(409, "not_waiting", str(exc)) from None
    run.refresh_from_db()
    return serializers.run_summary(run)
