"""What the pages and the API show of a run and its steps (plain dicts)."""

from __future__ import annotations

from typing import Any

from workflows import queue
from workflows.models import StepRun, WorkflowRun

S = StepRun.Status


def step_summary(s: StepRun) -> dict[str, Any]:
    return {
        "name": s.name,
        "action": s.action,
        "status": s.status,
        "optional": s.optional,
        "triggerRule": s.trigger_rule,
        "dependsOn": s.depends_on,
        "attempts": s.attempts,
        "maxAttempts": s.max_attempts,
        "redeliveries": s.redeliveries,
        "queuedAt": s.queued_at,
        "startedAt": s.started_at,
        "finishedAt": s.finished_at,
        "nextAttemptAt": s.not_before if s.status == S.RETRYING else None,
        "output": s.output,
        "error": s.error,
    }


def run_summary(run: WorkflowRun) -> dict[str, Any]:
    return {
        "runId": run.pk,
        "flowId": run.flow_slug,
        "status": run.status,
        "actor": run.actor.get_username() if run.actor_id and run.actor else None,
        "actingAs": run.acting_user.get_username() if run.acting_user_id and run.acting_user else None,
        "data": run.data,
        "error": run.error,
        "createdAt": run.created_at,
        "pausedAt": run.paused_at,
        "startedAt": run.started_at,
        "finishedAt": run.finished_at,
        **queue.queue_summary(run),
        "deadlineAt": run.deadline_at,
        "deadlineIncident": run.deadline_incident_id,
        "steps": [step_summary(s) for s in run.steps.all()],
    }
