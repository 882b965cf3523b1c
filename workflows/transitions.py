"""The run and step transitions nobody asked for (a run finishing, a lease expiring), each with its
audit entry in the same transaction. User-driven transitions (start, cancel, retry, approve) are in
workflows/actions.py; both are called by the engine modules (dispatch, sweeps), never the other
way round."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import F
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


def expire_lease(step: StepRun, *, now: datetime, redeliver: bool, error: str) -> bool:
    """A step whose lease ran out: a running one (its worker was lost) is re-delivered, queued
    again with its attempt given back and one more re-delivery counted, or fails once out of
    re-deliveries; a waiting approval fails (nobody decided in time). False if someone else moved
    it first (the conditional UPDATE on its claim decides)."""
    waiting = step.status == S.WAITING
    with transaction.atomic():
        mine = StepRun.objects.filter(pk=step.pk, status=step.status, claims=step.claims, lease_until__lt=now)
        if redeliver:
            won = mine.update(status=S.QUEUED, error=error, lease_until=None, queued_at=now,
                              attempts=max(0, step.attempts - 1), redeliveries=F("redeliveries") + 1)
        else:
            won = mine.update(status=S.FAILED, error=error, lease_until=None, finished_at=now)
        if won:
            record(events.WORKFLOW_LEASE_EXPIRED, actor=CONTROLLER, target=step.run,
                   payload={"runId": step.run_id, "step": step.name, "attempts": step.attempts,
                            "redeliveries": step.redeliveries + (1 if redeliver else 0), "requeued": redeliver,
                            "approval": waiting, events.CAUSE: "approval_deadline" if waiting else "worker_lost"})
    return bool(won)


def release_step(step: StepRun, *, now: datetime, error: str) -> bool:
    """A worker that is stopping hands its running step back: queued again, its attempt given back,
    no re-delivery counted (the worker was stopped, not lost). Audited like a lease that ended
    without a result, with its cause; False if the step is no longer this worker's claim."""
    with transaction.atomic():
        won = StepRun.objects.filter(pk=step.pk, status=S.RUNNING, claims=step.claims).update(
            status=S.QUEUED, error=error, lease_until=None, queued_at=now, attempts=max(0, step.attempts - 1))
        if won:
            record(events.WORKFLOW_LEASE_EXPIRED, actor=WORKER, target=step.run,
                   payload={"runId": step.run_id, "step": step.name, "attempts": step.attempts,
                            "redeliveries": step.redeliveries, "requeued": True, "approval": False,
                            events.CAUSE: "worker_stopped"})
    return bool(won)
