"""Domain actions of the workflows app: start, cancel and retry runs, decide approvals, save flows.
Each is atomic and writes exactly one audit entry in its transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm

from audit import events
from audit.actions import record
from audit.models import AuditEntry
from policies.enforce import Decision, enforce
from workflows import dispatch, transitions
from workflows.deadlines import compute_deadline
from workflows.models import StepRun, WorkflowDefinition, WorkflowRun

DEFAULT_STEP_TIMEOUT = 60
DEFAULT_APPROVAL_TIMEOUT = 24 * 3600  # how long an approval waits for a decision
DEFAULT_BACKOFF = 1.0


@dataclass
class StartOutcome:
    decision: Decision
    run: WorkflowRun | None = None
    dry_run: bool = False
    position: int | None = None  # set when the run was queued (1 = next to start)

    @property
    def queued(self) -> bool:
        return self.run is not None and self.position is not None


def start_run(definition: WorkflowDefinition, data: dict[str, Any], *, actor: Any,
              dry_run: bool = False) -> StartOutcome:
    """Create the run and its steps and the audit entry in one transaction; the quota check takes
    its lock first, so the count and the insert are atomic under any concurrency. Ready steps are
    enqueued once the transaction commits. Beyond a "when full: queue" quota the run is created
    queued instead (no step queued; workflows.queue starts it when a slot frees), still under the
    lock, so its id is its place in line."""
    with transaction.atomic():
        decision = enforce(actor, "run", definition, lock=not dry_run, flow=definition.slug,
                           tags=definition.tags)
        if dry_run:
            return StartOutcome(decision, dry_run=True)
        queued = decision.queueable
        if not decision.allowed and not queued:
            record(events.WORKFLOW_START, actor=actor, target=definition, outcome=AuditEntry.Outcome.DENIED,
                   payload={"flowId": definition.slug, "decision": decision.as_dict()})
            return StartOutcome(decision)
        now = timezone.now()
        run = WorkflowRun.objects.create(
            definition=definition,
            flow_slug=definition.slug,
            tag_list="," + ",".join(definition.tags) + "," if definition.tags else "",
            data=data,
            actor=actor,
            status=WorkflowRun.Status.QUEUED if queued else WorkflowRun.Status.PENDING,
            queue_key=decision.queue["key"] if queued and decision.queue else "",
            deadline_at=compute_deadline(definition.deadline, now) if definition.deadline else None,
        )
        steps = StepRun.objects.bulk_create(
            [
                StepRun(
                    run=run,
                    # Roots can start at once: queue them in this transaction rather than in a
                    # second one after commit (half the queries on the hot path of every start).
                    # A queued run's roots wait (pending) until the run leaves the queue.
                    status=StepRun.Status.PENDING if s.get("depends_on") or queued else StepRun.Status.QUEUED,
                    queued_at=None if s.get("depends_on") or queued else now,
                    name=s["name"],
                    action=s["action"],
                    params=s.get("params", {}),
                    depends_on=s.get("depends_on", []),
                    max_attempts=1 + int(s.get("retries", 0)),
                    retries=int(s.get("retries", 0)),
                    backoff_seconds=float(s.get("backoff", DEFAULT_BACKOFF)),
                    optional=bool(s.get("optional", False)),
                    timeout_seconds=int(s.get("timeout", DEFAULT_APPROVAL_TIMEOUT if s["action"] == "approval"
                                              else DEFAULT_STEP_TIMEOUT)),
                )
                for s in definition.steps
            ]
        )
        if queued:
            assert decision.queue is not None
            position = decision.queue["ahead"] + 1
            record(events.WORKFLOW_QUEUED, actor=actor, target=run,
                   payload={"flowId": definition.slug, "runId": run.pk, "position": position,
                            "queue": run.queue_key, "decision": decision.as_dict()})
            return StartOutcome(decision, run, position=position)
        record(events.WORKFLOW_START, actor=actor, target=run, payload={"flowId": definition.slug, "runId": run.pk})
        roots = [step.pk for step in steps if step.status == StepRun.Status.QUEUED]
        transaction.on_commit(lambda: [dispatch.enqueue(pk) for pk in roots])
    return StartOutcome(decision, run)


def cancel_run(run: WorkflowRun, *, actor: Any) -> bool:
    """Pending, queued and retrying steps never start; a running step is told to stop (its
    heartbeat finds the row no longer ours within a second and interrupts it) and its result is
    discarded (its conditional update loses). Returns False when the run had already finished."""
    with transaction.atomic():
        now = timezone.now()
        # Which state it leaves decides whether a quota slot frees (a queued run held none): two
        # conditional updates, so a run dequeued at this very moment counts as active.
        cancelled = {"status": WorkflowRun.Status.CANCELLED, "finished_at": now}
        was_queued = bool(WorkflowRun.objects.filter(pk=run.pk, status=WorkflowRun.Status.QUEUED).update(**cancelled))
        won = was_queued or WorkflowRun.objects.filter(pk=run.pk, status__in=WorkflowRun.ACTIVE).update(**cancelled)
        if not won:
            return False
        stopped = StepRun.objects.filter(run=run, status__in=dispatch.UNFINISHED).update(
            status=StepRun.Status.CANCELLED, finished_at=now, lease_until=None, not_before=None)
        record(events.WORKFLOW_CANCEL, actor=actor, target=run,
               payload={"runId": run.pk, "flowId": run.flow_slug, "stepsStopped": stopped,
                        **({"queued": True} if was_queued else {})})
        if not was_queued:
            transitions.slot_freed(run)
    return True


class RetryRefused(Exception):
    pass


@dataclass
class RetryOutcome:
    decision: Decision
    steps: list[str]


def retry_run(run: WorkflowRun, *, actor: Any) -> RetryOutcome:
    """Run a failed (or cancelled) run again from where it stopped: steps that succeeded keep
    their output and never run again; failed, skipped and cancelled ones start over with a fresh
    round of attempts. The run becomes active again, so it asks the policies first, exactly as a
    start does: the quota counts it against its owner, under the quota's lock. A refusal is
    audited (denied) and committed; nothing else changes."""
    with transaction.atomic():
        definition = run.definition
        decision = enforce(run.actor or actor, "run", definition, lock=True, flow=run.flow_slug,
                           tags=definition.tags)
        locked = WorkflowRun.objects.select_for_update().get(pk=run.pk)
        if locked.status not in (WorkflowRun.Status.FAILED, WorkflowRun.Status.CANCELLED):
            raise RetryRefused(f"Run {run.pk} is {locked.status}; only a failed or cancelled run can be retried.")
        if not decision.allowed:
            record(events.WORKFLOW_RETRY, actor=actor, target=locked, outcome=AuditEntry.Outcome.DENIED,
                   payload={"runId": run.pk, "flowId": run.flow_slug, "decision": decision.as_dict()})
            return RetryOutcome(decision, [])
        redo = list(StepRun.objects.filter(run=locked, status__in=(StepRun.Status.FAILED, StepRun.Status.SKIPPED,
                                                                   StepRun.Status.CANCELLED)))
        for step in redo:
            # A new round of attempts on top of the old ones: attempts never exceed max_attempts;
            # and a new round of lost-worker re-deliveries (claims keeps counting: the fence).
            StepRun.objects.filter(pk=step.pk).update(
                status=StepRun.Status.PENDING, max_attempts=step.attempts + 1 + step.retries, error="", redeliveries=0,
                output=None, lease_until=None, not_before=None, queued_at=None, finished_at=None)
        WorkflowRun.objects.filter(pk=locked.pk).update(status=WorkflowRun.Status.RUNNING, error="",
                                                        finished_at=None)
        names = [s.name for s in redo]
        record(events.WORKFLOW_RETRY, actor=actor, target=locked,
               payload={"runId": run.pk, "flowId": run.flow_slug, "steps": names, "from": locked.status})
        transaction.on_commit(lambda: dispatch.dispatch_ready(run.pk))
    return RetryOutcome(decision, names)


class DecisionRefused(Exception):
    pass


def decide_approval(run: WorkflowRun, step_name: str, *, approve: bool, actor: Any, comment: str = "") -> StepRun:
    """Approve (the step succeeds and its dependents start) or reject (the step fails; so does the
    run unless the step is optional). Only a step that is waiting can be decided, once."""
    with transaction.atomic():
        step = StepRun.objects.filter(run=run, name=step_name).first()
        if step is None:
            raise StepRun.DoesNotExist(f"Run {run.pk} has no step '{step_name}'.")
        if step.action != "approval":
            raise DecisionRefused(f"Step '{step_name}' is not an approval step.")
        now = timezone.now()
        who = actor.get_username() if hasattr(actor, "get_username") else str(actor)
        decision = {"approved": approve, "by": who, "at": now.isoformat(), "comment": comment[:500],
                    "prompt": (step.output or {}).get("prompt", "")}
        won = StepRun.objects.filter(pk=step.pk, status=StepRun.Status.WAITING).update(
            status=StepRun.Status.SUCCEEDED if approve else StepRun.Status.FAILED,
            output=decision, finished_at=now, lease_until=None,
            error="" if approve else f"rejected by {who}" + (f": {comment[:200]}" if comment else ""))
        if not won:
            raise DecisionRefused(f"Step '{step_name}' is {step.status}, not waiting for a decision.")
        record(events.WORKFLOW_APPROVE if approve else "workflow.reject", actor=actor, target=run,
               payload={"runId": run.pk, "flowId": run.flow_slug, "step": step_name, "approved": approve,
                        "comment": comment[:500]})
        transaction.on_commit(lambda: dispatch.dispatch_ready(run.pk))
    step.refresh_from_db()
    return step


def save_flow(definition: WorkflowDefinition, *, actor: Any, created: bool, changes: dict[str, Any] | None = None,
              analysts_may_run: bool | None = None) -> WorkflowDefinition:
    definition.full_clean()
    with transaction.atomic():
        definition.save()
        if analysts_may_run is None:
            analysts_may_run = "analytics" in definition.tags
        if analysts_may_run:
            from django.contrib.auth.models import Group

            group = Group.objects.filter(name="analysts").first()
            if group:
                assign_perm("workflows.view_workflowdefinition", group, definition)
                assign_perm("workflows.run_workflowdefinition", group, definition)
        record(events.FLOW_CREATE if created else "flow.update", actor=actor, target=definition,
               payload={"flowId": definition.slug, "changes": changes or {}})
    return definition
