"""The workflow timers the controller sweeps every tick (workflows/apps.py registers them): expired
leases, approval deadlines, retries whose backoff passed, queued steps whose task was lost."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from slo.models import Incident
from workflows import dispatch, transitions
from workflows.dispatch import S, dispatch_ready, enqueue
from workflows.models import StepRun, WorkflowRun


def sweep_expired_leases() -> int:
    """A step whose worker was lost mid-run (killed, its host gone: its lease lapsed) is
    re-delivered without spending its retries, up to HMS_STEP_REDELIVERIES times, then fails
    naming the cause; an approval nobody decided in time fails. Audited: a transition nobody
    asked for."""
    now = timezone.now()
    limit = int(settings.HMS_STEP_REDELIVERIES)
    swept = 0
    expired = StepRun.objects.filter(status__in=(S.RUNNING, S.WAITING), lease_until__lt=now).select_related("run")
    for step in expired:
        if step.status == S.WAITING:
            redeliver, error = False, "approval timed out: nobody decided before the deadline"
        elif step.redeliveries < limit:
            redeliver = True
            error = (f"worker lost: its lease expired ({step.worker or 'unknown worker'} stopped answering); "
                     f"re-delivered ({step.redeliveries + 1} of {limit})")
        else:
            redeliver = False
            lost = step.redeliveries + 1
            error = (f"worker lost {lost} time{'s' if lost != 1 else ''}: the worker running this step stopped "
                     f"answering (its lease expired), last {step.worker or 'unknown worker'}; "
                     f"HMS_STEP_REDELIVERIES={limit}")
        won = transitions.expire_lease(step, now=now, redeliver=redeliver, error=error)
        if not won:
            continue
        swept += 1
        if redeliver:
            enqueue(step.pk, dispatch.run_length(step.action, step.timeout_seconds))
        else:
            dispatch_ready(step.run_id)
    return swept


def promote_due_retries() -> int:
    """Steps whose backoff has passed go back to the workers (those of a paused run wait for its
    resume: promoting them would only queue what nobody may claim)."""
    now = timezone.now()
    ids = list(StepRun.objects.filter(status=S.RETRYING, not_before__lte=now)
               .exclude(run__status=WorkflowRun.Status.PAUSED).values_list("id", flat=True)[:500])
    promoted = 0
    for step_id in ids:
        if StepRun.objects.filter(pk=step_id, status=S.RETRYING).update(status=S.QUEUED, queued_at=now,
                                                                        not_before=None):
            enqueue(step_id)
            promoted += 1
    return promoted


def requeue_stranded(older_than: timedelta = timedelta(seconds=30)) -> int:
    """Queued steps whose task was lost (broker restarted) are handed to the workers again;
    the claim makes a duplicate delivery harmless."""
    cutoff = timezone.now() - older_than
    ids = list(StepRun.objects.filter(status=S.QUEUED, queued_at__lt=cutoff).values_list("id", flat=True)[:200])
    for step_id in ids:
        StepRun.objects.filter(pk=step_id).update(queued_at=timezone.now())
        enqueue(step_id)
    return len(ids)


def sweep_due() -> dict[str, int]:
    """One controller pass over the workflow timers: expired leases, approval deadlines, retries
    whose backoff passed. One indexed query when nothing is due, which is almost always: the
    controller ticks twice a second and idle database load should stay near zero."""
    now = timezone.now()
    expired = Q(status__in=(S.RUNNING, S.WAITING), lease_until__lt=now)
    retry = Q(status=S.RETRYING, not_before__lte=now) & ~Q(run__status=WorkflowRun.Status.PAUSED)
    # order_by(): without it StepRun's default ordering (run, id) joins the DISTINCT, which then
    # returns every due row instead of at most three statuses. The retry half uses the partial
    # index on not_before (steprun_retry_due), so a pile of retrying steps waiting out a long
    # back-off costs an index probe, not a scan of them all.
    due = set(StepRun.objects.filter(expired | retry).order_by()
              .values_list("status", flat=True).distinct())
    out = {"swept": 0, "retried": 0}
    if due & {S.RUNNING, S.WAITING}:
        out["swept"] = sweep_expired_leases()
    if S.RETRYING in due:
        out["retried"] = promote_due_retries()
    return out


def sweep_deadlines() -> dict[str, int]:
    """The monitor's deadline job (every second): open an incident for each unfinished run past its
    deadline, resolve the incident of each such run that has finished since. Two indexed queries
    when there is nothing to do."""
    now = timezone.now()
    missed = list(WorkflowRun.objects.filter(status__in=WorkflowRun.UNFINISHED, deadline_at__lt=now,
                                             deadline_incident_id__isnull=True).values_list("pk", flat=True)[:200])
    open_ids = Incident.objects.filter(kind=Incident.Kind.DEADLINE, status__in=Incident.ACTIVE).values("pk")
    ended = list(WorkflowRun.objects.exclude(status__in=WorkflowRun.UNFINISHED)
                 .filter(deadline_incident_id__in=open_ids).values_list("pk", flat=True)[:200])
    out = {"missed": 0, "resolved": 0}
    for pk in missed:
        out["missed"] += transitions.miss_deadline(pk, now=now)
    for pk in ended:
        out["resolved"] += transitions.end_deadline_incident(pk)
    return out
