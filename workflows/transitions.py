"""The run and step transitions nobody asked for (a run finishing, a lease expiring), each with its
audit entry in the same transaction. User-driven transitions (start, cancel, retry, approve) are in
workflows/actions.py; both are called by the engine modules (dispatch, sweeps), never the other
way round."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from audit import events
from audit.actions import record
from workflows.models import StepRun, WorkflowRun

WORKER = "system:worker"
CONTROLLER = "system:controller"
S = StepRun.Status


def finish_run(run_id: int, final: str, error: str) -> bool:
    """Finish an active run with its final status; False if it had already finished."""
    with transaction.atomic():
        won = WorkflowRun.objects.filter(pk=run_id, status__in=WorkflowRun.ACTIVE).update(
            status=final, finished_at=timezone.now(), error=error)
        if won:
            run = WorkflowRun.objects.get(pk=run_id)
            record(events.WORKFLOW_FINISH, actor=WORKER, target=run,
                   payload={"flowId": run.flow_slug, "runId": run_id, "status": final})
    return bool(won)


def expire_lease(step: StepRun, *, now: datetime, retry: bool, waiting: bool, error: str) -> bool:
    """A step whose lease ran out goes back to the queue (retry) or fails; False if someone else
    moved it first (the conditional UPDATE claims it)."""
    with transaction.atomic():
        won = StepRun.objects.filter(pk=step.pk, status=step.status, attempts=step.attempts,
                                     lease_until__lt=now).update(
            status=S.QUEUED if retry else S.FAILED, error=error, lease_until=None,
            queued_at=now if retry else None, finished_at=None if retry else now)
        if won:
            record(events.WORKFLOW_LEASE_EXPIRED, actor=CONTROLLER, target=step.run,
                   payload={"runId": step.run_id, "step": step.name, "attempts": step.attempts,
                            "requeued": retry, "approval": waiting})
    return bool(won)
