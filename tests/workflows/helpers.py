"""Helpers shared by the workflow tests: make flows, drive steps in-process."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from workflows import actions, execute, sweeps
from workflows.models import StepRun, WorkflowDefinition, WorkflowRun


def make_flow(slug: str, steps: list[dict[str, Any]], tags: list[str] | None = None) -> WorkflowDefinition:
    return actions.save_flow(WorkflowDefinition(slug=slug, name=slug, steps=steps, tags=tags or []),
                             actor="system:test", created=True)


def step(name: str, *deps: str, action: str = "noop", **extra: Any) -> dict[str, Any]:
    return {"name": name, "action": action, "depends_on": list(deps), **extra}


def py(name: str, fn: str, *deps: str, kwargs: dict | None = None, **extra: Any) -> dict[str, Any]:
    return step(name, *deps, action="python", params={"callable": fn, "kwargs": kwargs or {}}, **extra)


def statuses(run: WorkflowRun) -> dict[str, str]:
    return dict(StepRun.objects.filter(run=run).values_list("name", "status"))


def drain(run: WorkflowRun, rounds: int = 20) -> WorkflowRun:
    """Play the workers and the controller in this process: run queued steps, promote retries as
    if their backoff had passed."""
    for _ in range(rounds):
        StepRun.objects.filter(run=run, status=StepRun.Status.RETRYING).update(not_before=timezone.now())
        sweeps.promote_due_retries()
        ids = list(StepRun.objects.filter(run=run, status=StepRun.Status.QUEUED).values_list("id", flat=True))
        if not ids:
            break
        for step_id in ids:
            execute.execute_step(step_id)
    run.refresh_from_db()
    return run
