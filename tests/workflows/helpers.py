"""Helpers shared by the workflow tests: make flows, drive steps in-process."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
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


# --- real worker processes (tests/faults/test_worker_*.py) --------------------------------------
def completions(journal: Path) -> list[str]:
    """The step names the journal callable recorded, one per completed execution."""
    if not journal.exists():
        return []
    return [line.split()[1] for line in journal.read_text().splitlines() if line.strip()]


def worker_pid(step_id: int) -> int | None:
    """The pid of the worker process that claimed the step last (StepRun.worker is host:pid)."""
    worker = StepRun.objects.filter(pk=step_id).values_list("worker", flat=True).first() or ""
    _, _, pid = worker.rpartition(":")
    return int(pid) if pid.isdigit() else None


def cluster_of(pid: int | None, clusters: list[Any]) -> Any:
    """Which spawned qcluster (tests.conftest.Proc, its own process group) a worker pid belongs to."""
    if pid is None:
        return None
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return None
    return next((c for c in clusters if c.pid == group), None)


def wait_finished(run: WorkflowRun, timeout: float, procs: Sequence[Any] = ()) -> WorkflowRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status not in WorkflowRun.ACTIVE:
            return run
        time.sleep(0.1)
    logs = "\n".join(p.output()[-3000:] for p in procs)
    raise AssertionError(f"run {run.pk} still {run.status} after {timeout}s: {statuses(run)}\n{logs}")
