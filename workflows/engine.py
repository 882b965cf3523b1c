"""The Orchestrator: dispatch ready steps to django-q2, claim them under a lease, record the
outcome, unblock successors and settle the run.

Delivery is at-least-once (a killed worker's step is re-claimed once its lease expires); success
is at-most-once: every transition is a conditional UPDATE whose row count says whether we won, as
healthchecks' sendalerts does ("another process got there first").
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django_q.tasks import async_task

from audit.actions import record
from workflows.models import StepRun, WorkflowRun
from workflows.steps import ACTIONS, StepContext, StepError

log = logging.getLogger(__name__)
WORKER = "system:worker"


def active_runs(*, user_id: int | None, flow: str | None, tag: str | None) -> int:
    """Runs holding a quota slot: pending or running (a dead worker's run stays active until its
    lease is swept, then it fails and frees the slot)."""
    qs = WorkflowRun.objects.filter(status__in=WorkflowRun.ACTIVE)
    if user_id is not None:
        qs = qs.filter(actor_id=user_id)
    if flow:
        qs = qs.filter(flow_slug=flow)
    if tag:
        qs = qs.filter(tag_list__contains=f",{tag},")
    return qs.count()


# --- dispatch ---------------------------------------------------------------------------------


def dispatch_ready(run_id: int) -> list[int]:
    """Queue every pending step of the run whose dependencies all succeeded."""
    steps = list(StepRun.objects.filter(run_id=run_id).values("id", "name", "status", "depends_on"))
    done = {s["name"] for s in steps if s["status"] == StepRun.Status.SUCCEEDED}
    queued: list[int] = []
    now = timezone.now()
    for s in steps:
        if s["status"] == StepRun.Status.PENDING and set(s["depends_on"]) <= done:
            won = StepRun.objects.filter(pk=s["id"], status=StepRun.Status.PENDING).update(
                status=StepRun.Status.QUEUED, queued_at=now
            )
            if won:
                queued.append(s["id"])
    for step_id in queued:
        enqueue(step_id)
    return queued


def enqueue(step_id: int) -> None:
    async_task("workflows.engine.execute_step", step_id, task_name=f"step-{step_id}", group="steps")


# --- execution --------------------------------------------------------------------------------


def _claim(step_id: int) -> StepRun | None:
    now = timezone.now()
    step = StepRun.objects.filter(pk=step_id).only("timeout_seconds", "not_before").first()
    if step is None:
        return None
    lease = timedelta(seconds=step.timeout_seconds + settings.HMS_STEP_LEASE_SECONDS)
    claimable = Q(status=StepRun.Status.QUEUED) | Q(status=StepRun.Status.RUNNING, lease_until__lt=now)
    won = (
        StepRun.objects.filter(claimable, pk=step_id, attempts__lt=F("max_attempts"))
        .filter(run__status__in=WorkflowRun.ACTIVE)
        .update(status=StepRun.Status.RUNNING, attempts=F("attempts") + 1, lease_until=now + lease,
                started_at=now, error="")
    )
    if not won:
        return None  # another worker got there first, or the step/run is finished or cancelled
    WorkflowRun.objects.filter(pk=StepRun.objects.filter(pk=step_id).values("run_id")[:1],
                               status=WorkflowRun.Status.PENDING).update(
        status=WorkflowRun.Status.RUNNING, started_at=now)
    return StepRun.objects.select_related("run").get(pk=step_id)


def execute_step(step_id: int) -> str:
    step = _claim(step_id)
    if step is None:
        return "not claimed"
    run = step.run
    outputs = dict(
        StepRun.objects.filter(run_id=run.pk, status=StepRun.Status.SUCCEEDED).values_list("name", "output")
    )
    ctx = StepContext(run.pk, step.name, step.params, run.data, outputs, float(step.timeout_seconds),
                      step.attempts)
    try:
        output = ACTIONS[step.action](ctx)
    except Exception as exc:  # a step's failure is data, not a crash of the worker
        message = str(exc) if isinstance(exc, StepError) else f"{exc.__class__.__name__}: {exc}"
        _fail_attempt(step, message)
        return "failed"
    won = StepRun.objects.filter(pk=step.pk, status=StepRun.Status.RUNNING, attempts=step.attempts).update(
        status=StepRun.Status.SUCCEEDED, output=output, finished_at=timezone.now(), lease_until=None
    )
    if won:
        dispatch_ready(run.pk)
        settle_run(run.pk)
    return "succeeded" if won else "lost lease"


def _fail_attempt(step: StepRun, message: str) -> None:
    retry = step.attempts < step.max_attempts
    now = timezone.now()
    won = StepRun.objects.filter(pk=step.pk, status=StepRun.Status.RUNNING, attempts=step.attempts).update(
        status=StepRun.Status.QUEUED if retry else StepRun.Status.FAILED,
        error=message[:2000],
        lease_until=None,
        finished_at=None if retry else now,
    )
    if not won:
        return
    if retry:
        enqueue(step.pk)
    else:
        skip_blocked(step.run_id)
        settle_run(step.run_id)


def skip_blocked(run_id: int) -> None:
    """Pending steps that can never run (a dependency failed) are skipped, never started."""
    steps = {s.name: s for s in StepRun.objects.filter(run_id=run_id)}
    dead = {n for n, s in steps.items() if s.status in (StepRun.Status.FAILED, StepRun.Status.SKIPPED,
                                                       StepRun.Status.CANCELLED)}
    changed = True
    while changed:
        changed = False
        for name, s in steps.items():
            if s.status == StepRun.Status.PENDING and dead & set(s.depends_on):
                StepRun.objects.filter(pk=s.pk, status=StepRun.Status.PENDING).update(status=StepRun.Status.SKIPPED)
                s.status = StepRun.Status.SKIPPED
                dead.add(name)
                changed = True


def settle_run(run_id: int) -> str | None:
    """Derive the run's status from its steps; finish it (audited) once nothing can move."""
    statuses = list(StepRun.objects.filter(run_id=run_id).values_list("status", flat=True))
    if any(s not in StepRun.DONE for s in statuses):
        return None
    if StepRun.Status.FAILED in statuses:
        final = WorkflowRun.Status.FAILED
    elif StepRun.Status.CANCELLED in statuses:
        final = WorkflowRun.Status.CANCELLED
    else:
        final = WorkflowRun.Status.SUCCEEDED
    with transaction.atomic():
        won = WorkflowRun.objects.filter(pk=run_id, status__in=WorkflowRun.ACTIVE).update(
            status=final, finished_at=timezone.now()
        )
        if won:
            run = WorkflowRun.objects.get(pk=run_id)
            record("workflow.finish", actor=WORKER, target=run,
                   payload={"flowId": run.flow_slug, "runId": run_id, "status": final})
    return final if won else None


# --- sweeping (called by the controller) -------------------------------------------------------


def sweep_expired_leases() -> int:
    """A step whose worker died mid-run is re-queued (or failed when out of attempts)."""
    now = timezone.now()
    swept = 0
    for step in StepRun.objects.filter(status=StepRun.Status.RUNNING, lease_until__lt=now).select_related("run"):
        retry = step.attempts < step.max_attempts
        with transaction.atomic():
            won = StepRun.objects.filter(pk=step.pk, status=StepRun.Status.RUNNING, lease_until__lt=now).update(
                status=StepRun.Status.QUEUED if retry else StepRun.Status.FAILED,
                error="lease expired: the worker running this step stopped answering",
                finished_at=None if retry else now,
            )
            if won:
                record("workflow.lease_expired", actor="system:controller", target=step.run,
                       payload={"runId": step.run_id, "step": step.name, "attempts": step.attempts,
                                "requeued": retry})
        if not won:
            continue
        swept += 1
        if retry:
            enqueue(step.pk)
        else:
            skip_blocked(step.run_id)
            settle_run(step.run_id)
    return swept


def requeue_stranded(older_than: timedelta = timedelta(seconds=30)) -> int:
    """Queued steps whose task was lost (broker restarted) are handed to the workers again;
    the claim makes a duplicate delivery harmless."""
    cutoff = timezone.now() - older_than
    ids = list(StepRun.objects.filter(status=StepRun.Status.QUEUED, queued_at__lt=cutoff).values_list("id", flat=True)[:200])
    for step_id in ids:
        StepRun.objects.filter(pk=step_id).update(queued_at=timezone.now())
        enqueue(step_id)
    return len(ids)


def run_summary(run: WorkflowRun) -> dict[str, Any]:
    return {
        "runId": run.pk,
        "flowId": run.flow_slug,
        "status": run.status,
        "actor": run.actor.get_username() if run.actor_id and run.actor else None,
        "data": run.data,
        "error": run.error,
        "createdAt": run.created_at,
        "startedAt": run.started_at,
        "finishedAt": run.finished_at,
        "steps": [
            {
                "name": s.name,
                "action": s.action,
                "status": s.status,
                "dependsOn": s.depends_on,
                "attempts": s.attempts,
                "maxAttempts": s.max_attempts,
                "startedAt": s.started_at,
                "finishedAt": s.finished_at,
                "output": s.output,
                "error": s.error,
            }
            for s in run.steps.all()
        ],
    }
