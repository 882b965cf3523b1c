"""Domain actions of the workflows app: start and cancel runs, save flows. Audited, atomic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm

from audit.actions import record
from audit.models import AuditEntry
from policies.enforce import Decision, enforce
from workflows import engine
from workflows.models import StepRun, WorkflowDefinition, WorkflowRun

DEFAULT_STEP_TIMEOUT = 60


@dataclass
class StartOutcome:
    decision: Decision
    run: WorkflowRun | None = None
    dry_run: bool = False


def start_run(definition: WorkflowDefinition, data: dict[str, Any], *, actor: Any, dry_run: bool = False) -> StartOutcome:
    """Create the run and its steps and the audit entry in one transaction; the quota check takes
    its lock first, so the count and the insert are atomic under any concurrency. Ready steps are
    enqueued once the transaction commits."""
    with transaction.atomic():
        decision = enforce(actor, "run", definition, lock=not dry_run, flow=definition.slug,
                           tags=definition.tags)
        if dry_run:
            return StartOutcome(decision, dry_run=True)
        if not decision.allowed:
            record("workflow.start", actor=actor, target=definition, outcome=AuditEntry.Outcome.DENIED,
                   payload={"flowId": definition.slug, "decision": decision.as_dict()})
            return StartOutcome(decision)
        run = WorkflowRun.objects.create(
            definition=definition,
            flow_slug=definition.slug,
            tag_list="," + ",".join(definition.tags) + "," if definition.tags else "",
            data=data,
            actor=actor,
        )
        StepRun.objects.bulk_create(
            [
                StepRun(
                    run=run,
                    name=s["name"],
                    action=s["action"],
                    params=s.get("params", {}),
                    depends_on=s.get("depends_on", []),
                    max_attempts=1 + int(s.get("retries", 0)),
                    timeout_seconds=int(s.get("timeout", DEFAULT_STEP_TIMEOUT)),
                )
                for s in definition.steps
            ]
        )
        record("workflow.start", actor=actor, target=run, payload={"flowId": definition.slug, "runId": run.pk})
        transaction.on_commit(lambda: engine.dispatch_ready(run.pk))
    return StartOutcome(decision, run)


def cancel_run(run: WorkflowRun, *, actor: Any) -> bool:
    """Pending and queued steps never start; a running step's result is discarded on completion
    (its conditional update loses). Returns False when the run had already finished."""
    with transaction.atomic():
        won = WorkflowRun.objects.filter(pk=run.pk, status__in=WorkflowRun.ACTIVE).update(
            status=WorkflowRun.Status.CANCELLED, finished_at=timezone.now()
        )
        if not won:
            return False
        StepRun.objects.filter(run=run, status__in=[StepRun.Status.PENDING, StepRun.Status.QUEUED,
                                                    StepRun.Status.RUNNING]).update(
            status=StepRun.Status.CANCELLED, finished_at=timezone.now(), lease_until=None)
        record("workflow.cancel", actor=actor, target=run, payload={"runId": run.pk, "flowId": run.flow_slug})
    return True


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
        record("flow.create" if created else "flow.update", actor=actor, target=definition,
               payload={"flowId": definition.slug, "changes": changes or {}})
    return definition
