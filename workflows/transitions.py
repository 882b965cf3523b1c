"""The run and step transitions nobody asked for (a run finishing, a lease expiring), each with its
audit entry in the same transaction. User-driven transitions (start, cancel, retry, approve) are in
workflows/actions.py; both are called by the engine modules (dispatch, sweeps), never the other
way round."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit import events
from audit.actions import record
from policies.enforce import enforce
from slo import actions as slo_actions
from slo.models import Incident
from workflows.deadlines import describe
from workflows.models import StepRun, WorkflowRun

WORKER = "system:worker"
CONTROLLER = "system:controller"
S = StepRun.Status

# Called (after commit) with a run that gave back its quota slot: workflows.queue starts the
# head of the queue waiting for it. Registered in apps.py, so the engine modules need not import
# the queue (which imports them).
_slot_freed_hooks: list[Callable[[WorkflowRun], None]] = []


def on_slot_freed(hook: Callable[[WorkflowRun], None]) -> None:
    if hook not in _slot_freed_hooks:
        _slot_freed_hooks.append(hook)


def slot_freed(run: WorkflowRun) -> None:
    """Inside the transaction that ended an active run: once it commits, the queue may move."""
    for hook in _slot_freed_hooks:
        transaction.on_commit(lambda hook=hook: hook(run))


def finish_run(run_id: int, final: str, error: str) -> bool:
    """Finish an active run with its final status; False if it had already finished.

    Usually called inside the step's transaction (under the run's row lock): savepoint=False joins
    it instead of wrapping a SAVEPOINT/RELEASE pair around two statements; an error here rolls the
    whole transaction back, as it would anyway (nothing catches it in between)."""
    with transaction.atomic(savepoint=False):
        won = WorkflowRun.objects.filter(pk=run_id, status__in=WorkflowRun.ACTIVE).update(
            status=final, finished_at=timezone.now(), error=error)
        if won:
            run = WorkflowRun.objects.get(pk=run_id)
            record(events.WORKFLOW_FINISH, actor=WORKER, target=run,
                   payload={"flowId": run.flow_slug, "runId": run_id, "status": final})
            slot_freed(run)
    return bool(won)


def start_queued(run_id: int, *, actor: Any = CONTROLLER) -> bool | None:
    """Start a queued run if its quotas now allow it: True (started: its steps still have to be
    dispatched, after commit, by the caller), False (still no room, or others are ahead of it),
    None (it is no longer queued: started or cancelled by someone else first).

    The policies decide exactly as for a start, under the same quota locks, with the run's place
    in line: a queueing quota counts only the runs queued ahead of it."""
    with transaction.atomic():
        run = WorkflowRun.objects.select_related("definition", "actor").filter(
            pk=run_id, status=WorkflowRun.Status.QUEUED).first()
        if run is None:
            return None
        definition = run.definition
        decision = enforce(run.actor or actor, "run", definition, lock=True, flow=run.flow_slug,
                           tags=definition.tags, queued_run=run.pk)
        if not decision.allowed:
            return False
        now = timezone.now()
        won = WorkflowRun.objects.filter(pk=run.pk, status=WorkflowRun.Status.QUEUED).update(
            status=WorkflowRun.Status.PENDING, dequeued_at=now)
        if not won:
            return None
        record(events.WORKFLOW_DEQUEUED, actor=actor, target=run,
               payload={"flowId": run.flow_slug, "runId": run.pk, "queue": run.queue_key,
                        "waitedSeconds": round((now - run.created_at).total_seconds(), 3),
                        "checked": decision.checked})
    return True


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


def miss_deadline(run_id: int, *, now: datetime) -> bool:
    """An unfinished run past its deadline: open a "deadline" incident (its alerts go to the SLA
    alert channels for every service, after commit), mark the run with it, audit. False if the run
    finished, or another controller opened it first (the run's row lock decides)."""
    with transaction.atomic():
        run = (WorkflowRun.objects.select_for_update().select_related("definition")
               .filter(pk=run_id, status__in=WorkflowRun.UNFINISHED, deadline_at__lt=now,
                       deadline_incident_id__isnull=True).first())
        if run is None:
            return False
        assert run.deadline_at is not None
        late = round((now - run.deadline_at).total_seconds(), 1)
        spec = run.definition.deadline
        evidence = {"flowId": run.flow_slug, "runId": run.pk, "deadline": spec,
                    "deadlineAt": run.deadline_at.isoformat(), "status": run.status, "lateSeconds": late}
        incident = slo_actions.open_incident(
            None, kind=Incident.Kind.DEADLINE, severity=Incident.Severity.PAGE, actor=CONTROLLER,
            title=f"Run {run.pk} of {run.flow_slug} missed its deadline"
                  f"{' (' + describe(spec) + ')' if spec else ''}: still {run.status}",
            evidence=evidence, flow_slug=run.flow_slug, run_id=run.pk)
        WorkflowRun.objects.filter(pk=run.pk).update(deadline_incident_id=incident.pk)
        record(events.WORKFLOW_DEADLINE_MISSED, actor=CONTROLLER, target=run,
               payload={**evidence, "incident": incident.pk})
    return True


def end_deadline_incident(run_id: int) -> bool:
    """A run that missed its deadline has finished: its incident resolves (alerting again)."""
    with transaction.atomic():
        run = WorkflowRun.objects.filter(pk=run_id).exclude(status__in=WorkflowRun.UNFINISHED).first()
        if run is None or run.deadline_incident_id is None:
            return False
        incident = Incident.objects.filter(pk=run.deadline_incident_id, status__in=Incident.ACTIVE).first()
        if incident is None:
            return False
        return slo_actions.resolve_incident(incident, actor=CONTROLLER, evidence={
            "runId": run.pk, "status": run.status,
            "finishedAt": run.finished_at.isoformat() if run.finished_at else None})
