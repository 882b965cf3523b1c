"""Domain actions of the workflows app: start, cancel, retry, pause and resume runs, decide
approvals, save flows.
Each is atomic and writes exactly one audit entry in its transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm

from audit import events
from audit.actions import record
from audit.models import AuditEntry
from core.permissions import can, has_perm
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
                    trigger_rule=s.get("trigger_rule", "all_success"),
                    approvers=s.get("approvers", {}),
                    allow_self_approval=bool(s.get("allow_self_approval", False)),
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
        # The roots' tasks: in this transaction with the ORM broker, after commit with Redis.
        dispatch.enqueue_at_commit([dispatch.Ready(step.pk, dispatch.run_length(step.action, step.timeout_seconds))
                                    for step in steps if step.status == StepRun.Status.QUEUED])
    return StartOutcome(decision, run)


def cancel_run(run: WorkflowRun, *, actor: Any, bulk: str | None = None) -> bool:
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
               payload={"runId": run.pk, "flowId": run.flow_slug, "stepsStopped": stopped}
               | ({events.BULK: bulk} if bulk else {}) | ({"queued": True} if was_queued else {}))
        if not was_queued:
            transitions.slot_freed(run)
    return True


class Refused(Exception):
    """A request the rules refuse: `status` and `code` for the API's {"error", "detail"}."""

    status, code = 409, "conflict"

    def __init__(self, detail: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status or type(self).status
        self.code = code or type(self).code


class RetryRefused(Refused):
    status, code = 409, "not_retryable"
    reason = "not failed or cancelled"  # what a bulk retry's count calls it


@dataclass
class RetryOutcome:
    decision: Decision
    steps: list[str]
    refused: Refused | None = None  # the retrier's rights, checked now (audited as denied)


def _who(actor: Any) -> str:
    return actor.get_username() if hasattr(actor, "get_username") else str(actor)


def _rejected_approval(run: WorkflowRun) -> StepRun | None:
    for step in StepRun.objects.filter(run=run, action="approval", status=StepRun.Status.FAILED):
        if isinstance(step.output, dict) and step.output.get("approved") is False:
            return step
    return None


def retry_run(run: WorkflowRun, *, actor: Any, bulk: str | None = None) -> RetryOutcome:
    """Run a failed (or cancelled) run again from where it stopped: steps that succeeded keep
    their output and never run again; failed, skipped and cancelled ones start over with a fresh
    round of attempts.

    The retry acts with the rights of whoever clicks, checked now: they need `run` on the flow
    today (a revoked user or a disabled flow cannot bring a run back to life), the policies are
    asked as for a start (a freeze exemption is the retrier's; the quota counts the run against
    its starter, under the quota's lock), and from now on the steps act as the retrier (scale
    steps check the retrier's rights). A rejected approval is final: such a run cannot be
    retried. A refusal by rights or policy is audited (denied) and committed; nothing else
    changes."""
    with transaction.atomic():
        definition = WorkflowDefinition.objects.get(pk=run.definition_id)  # as it is now, not as cached
        locked = WorkflowRun.objects.select_for_update(of=("self",)).select_related("actor").get(pk=run.pk)
        if locked.status not in (WorkflowRun.Status.FAILED, WorkflowRun.Status.CANCELLED):
            raise RetryRefused(f"Run {run.pk} is {locked.status}; only a failed or cancelled run can be retried.")
        rejected = _rejected_approval(locked)
        if rejected is not None:
            refusal = RetryRefused(f"Run {run.pk}: step '{rejected.name}' was rejected by "
                                   f"{(rejected.output or {}).get('by') or 'an approver'}; a rejection is final for "
                                   "this run (start a new run instead).")
            refusal.reason = "rejected approval"
            raise refusal
        starter = locked.actor.get_username() if locked.actor else None
        base = {"runId": run.pk, "flowId": run.flow_slug, events.STARTED_BY: starter, events.RETRIED_BY: _who(actor)}
        if bulk:
            base[events.BULK] = bulk
        refused: Refused | None = None
        if not definition.enabled:
            refused = RetryRefused(f"Flow '{definition.slug}' is disabled; its runs cannot be retried.",
                                   code="flow_disabled")
        elif not can(actor, "run", definition):
            refused = Refused(f"{_who(actor)} may not run flow '{definition.slug}' now; retrying a run needs "
                              "the run right on its flow.", status=403, code="forbidden")
        if refused is not None:
            record(events.WORKFLOW_RETRY, actor=actor, target=locked, outcome=AuditEntry.Outcome.DENIED,
                   payload=base | {"refused": refused.code, "detail": refused.detail})
            return RetryOutcome(Decision(), [], refused)
        decision = enforce(actor, "run", definition, lock=True, quota_for=locked.actor or actor,
                           flow=run.flow_slug, tags=definition.tags)
        if not decision.allowed:
            record(events.WORKFLOW_RETRY, actor=actor, target=locked, outcome=AuditEntry.Outcome.DENIED,
                   payload=base | {"decision": decision.as_dict()})
            return RetryOutcome(decision, [])
        redo = list(StepRun.objects.filter(run=locked, status__in=(StepRun.Status.FAILED, StepRun.Status.SKIPPED,
                                                                   StepRun.Status.CANCELLED)))
        for step in redo:
            # A new round of attempts on top of the old ones: attempts never exceed max_attempts;
            # and a new round of lost-worker re-deliveries (claims keeps counting: the fence).
            StepRun.objects.filter(pk=step.pk).update(
                status=StepRun.Status.PENDING, max_attempts=step.attempts + 1 + step.retries, error="", redeliveries=0,
                output=None, lease_until=None, not_before=None, queued_at=None, finished_at=None)
        WorkflowRun.objects.filter(pk=locked.pk).update(
            status=WorkflowRun.Status.RUNNING, error="", finished_at=None, paused_at=None,
            acting_user=actor if getattr(actor, "pk", None) is not None else None)
        names = [s.name for s in redo]
        record(events.WORKFLOW_RETRY, actor=actor, target=locked,
               payload=base | {"steps": names, "from": locked.status})
        transaction.on_commit(lambda: dispatch.dispatch_ready(run.pk))
    return RetryOutcome(decision, names)


class DecisionRefused(Refused):
    status, code = 409, "not_waiting"


def approval_refusal(step: StepRun, run: WorkflowRun, user: Any) -> DecisionRefused | None:
    """Why `user` may not decide this approval step, or None. Four eyes: the run's starter
    decides their own run's approval only when the step says allow_self_approval; the step may
    name who decides (approvers: a group, a permission, either suffices; superusers qualify).
    The caller has already checked the `approve` right on the run (core.permissions)."""
    uid = getattr(user, "pk", None)
    if not step.allow_self_approval and uid is not None and uid == run.actor_id:
        return DecisionRefused(f"Step '{step.name}' needs a second person: {_who(user)} started run {run.pk} and may "
                               "not decide its approval (four eyes; the step would have to say "
                               "allow_self_approval: true).", status=403, code="self_approval")
    approvers = step.approvers or {}
    if approvers and not getattr(user, "is_superuser", False):
        group, perm = approvers.get("group"), approvers.get("permission")
        in_group = bool(group) and user.groups.filter(name=group).exists()
        granted = bool(perm) and has_perm(user, perm)  # the choke point: an inactive user holds nothing
        if not (in_group or granted):
            named = " or ".join(x for x in (f"group '{group}'" if group else "",
                                            f"permission '{perm}'" if perm else "") if x)
            return DecisionRefused(f"Step '{step.name}' may be decided only by {named}; {_who(user)} is not one "
                                   "of its approvers.", status=403, code="not_an_approver")
    return None


def decide_approval(run: WorkflowRun, step_name: str, *, approve: bool, actor: Any, comment: str = "") -> StepRun:
    """Approve (the step succeeds and its dependents start) or reject (the step fails; so does the
    run unless the step is optional; a rejection is final: the run cannot be retried). Only a
    step that is waiting can be decided, once, by someone the step allows (approval_refusal),
    checked now."""
    with transaction.atomic():
        step = StepRun.objects.filter(run=run, name=step_name).first()
        if step is None:
            raise StepRun.DoesNotExist(f"Run {run.pk} has no step '{step_name}'.")
        if step.action != "approval":
            raise DecisionRefused(f"Step '{step_name}' is not an approval step.")
        if (why := approval_refusal(step, run, actor)) is not None:
            raise why
        now = timezone.now()
        who = _who(actor)
        decision = {"approved": approve, "by": who, "at": now.isoformat(), "comment": comment[:500],
                    "prompt": (step.output or {}).get("prompt", "")}
        won = StepRun.objects.filter(pk=step.pk, status=StepRun.Status.WAITING).update(
            status=StepRun.Status.SUCCEEDED if approve else StepRun.Status.FAILED,
            output=decision, finished_at=now, lease_until=None,
            error="" if approve else f"rejected by {who}" + (f": {comment[:200]}" if comment else ""))
        if not won:
            raise DecisionRefused(f"Step '{step_name}' is {step.status}, not waiting for a decision.")
        record(events.WORKFLOW_APPROVE if approve else events.WORKFLOW_REJECT, actor=actor, target=run,
               payload={"runId": run.pk, "flowId": run.flow_slug, "step": step_name, "approved": approve,
                        "comment": comment[:500], events.STARTED_BY: run.actor.get_username() if run.actor else None})
        transaction.on_commit(lambda: dispatch.dispatch_ready(run.pk))
    step.refresh_from_db()
    return step


def pause_run(run: WorkflowRun, *, actor: Any) -> int:
    """Hold a pending or running run: no pending or queued step starts until it is resumed;
    steps already running finish (their successors wait); an approval may still be decided. The
    run keeps its quota slot. Returns how many queued steps were held back."""
    with transaction.atomic():
        # The run's row lock orders us with the engine's advance (workflows.dispatch), which
        # queues successors under the same lock and reads the paused status there.
        locked = WorkflowRun.objects.select_for_update().get(pk=run.pk)
        if locked.status == WorkflowRun.Status.PAUSED:
            raise Refused(f"Run {run.pk} is already paused.", code="already_paused")
        if locked.status not in WorkflowRun.RUNNABLE:
            raise Refused(f"Run {run.pk} has finished ({locked.status}); only a pending or running run can be "
                          "paused.", code="not_active")
        WorkflowRun.objects.filter(pk=run.pk).update(status=WorkflowRun.Status.PAUSED, paused_at=timezone.now())
        # Queued steps go back to pending (their broker message then finds nothing to claim);
        # a worker that claimed one first runs it to the end, like any running step.
        held = StepRun.objects.filter(run=locked, status=StepRun.Status.QUEUED).update(
            status=StepRun.Status.PENDING, queued_at=None)
        running = list(StepRun.objects.filter(run=locked, status=StepRun.Status.RUNNING).values_list("name", flat=True))
        record(events.WORKFLOW_PAUSE, actor=actor, target=locked,
               payload={"runId": run.pk, "flowId": run.flow_slug, "from": locked.status, "stepsHeld": held,
                        "stillRunning": running})
    return held


def resume_run(run: WorkflowRun, *, actor: Any) -> None:
    """Let a paused run go on: the steps whose dependencies are met are queued at once."""
    with transaction.atomic():
        locked = WorkflowRun.objects.select_for_update().get(pk=run.pk)
        if locked.status != WorkflowRun.Status.PAUSED:
            code = "not_active" if locked.status not in WorkflowRun.ACTIVE else "not_paused"
            raise Refused(f"Run {run.pk} is {locked.status}, not paused.", code=code)
        to = WorkflowRun.Status.RUNNING if locked.started_at else WorkflowRun.Status.PENDING
        WorkflowRun.objects.filter(pk=run.pk).update(status=to, paused_at=None)
        paused_for = (timezone.now() - locked.paused_at).total_seconds() if locked.paused_at else None
        record(events.WORKFLOW_RESUME, actor=actor, target=locked,
               payload={"runId": run.pk, "flowId": run.flow_slug, "to": to, "pausedSeconds": paused_for})
        # Steps a lease sweep re-queued during the pause are sent again; the rest are queued by
        # advance. Duplicates are harmless: the claim decides.
        queued = list(StepRun.objects.filter(run=locked, status=StepRun.Status.QUEUED)
                      .values_list("id", "action", "timeout_seconds"))
        transaction.on_commit(lambda: (dispatch.dispatch_ready(run.pk),
                                       [dispatch.enqueue(i, dispatch.run_length(a, t)) for i, a, t in queued]))


BULK_MAX = 500  # runs per bulk operation: one click stays a bounded amount of work
BULK_OPS = {"cancel": "cancelled", "retry": "retried"}


@dataclass
class BulkOutcome:
    op: str
    done: list[int]
    refused: dict[str, list[int]]  # reason -> run ids
    left: int = 0  # matching runs beyond BULK_MAX, not touched

    def summary(self) -> str:
        """ "7 cancelled, 2 refused: not active, 1 refused: not permitted" """
        parts = [f"{len(self.done)} {BULK_OPS[self.op]}"]
        parts += [f"{len(ids)} refused: {reason}" for reason, ids in sorted(self.refused.items(),
                                                                            key=lambda kv: (-len(kv[1]), kv[0]))]
        if self.left:
            parts.append(f"{self.left} more not touched (at most {BULK_MAX} per operation)")
        return ", ".join(parts)


def bulk_runs(op: str, runs: list[WorkflowRun], *, actor: Any, scope: dict[str, Any], left: int = 0,
              missing: list[int] | None = None) -> BulkOutcome:
    """Cancel or retry each of `runs` (already restricted to what the actor may see) as if one
    had clicked on each: the permission is checked per run, each change is its own transaction
    and audit entry (tagged with this operation's id), and a refusal of one run leaves the
    others alone. A closing entry (`workflow.bulk`) records what was done and refused."""
    if op not in BULK_OPS:
        raise ValueError(f"unknown bulk operation {op!r}")
    tag = uuid.uuid4().hex[:12]
    out = BulkOutcome(op, [], {"not found": list(missing)} if missing else {}, left)

    def refuse(reason: str, run: WorkflowRun) -> None:
        out.refused.setdefault(reason, []).append(run.pk)

    for run in runs:
        if not can(actor, op, run):
            refuse("not permitted", run)
            continue
        if op == "cancel":
            if cancel_run(run, actor=actor, bulk=tag):
                out.done.append(run.pk)
            else:
                refuse("not active", run)
            continue
        try:
            outcome = retry_run(run, actor=actor, bulk=tag)
        except RetryRefused as exc:
            refuse(exc.reason, run)
            continue
        if outcome.refused is not None:
            refuse("not permitted" if outcome.refused.code == "forbidden" else outcome.refused.code.replace("_", " "),
                   run)
        elif not outcome.decision.allowed:
            refuse(f"policy {outcome.decision.policy}", run)
        else:
            out.done.append(run.pk)
    with transaction.atomic():
        record(events.WORKFLOW_BULK, actor=actor,
               payload={"op": op, events.BULK: tag, "scope": scope, "done": out.done, "refused": out.refused,
                        "left": left, "summary": out.summary()})
    return out


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
