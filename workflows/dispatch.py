"""The Orchestrator, part 1 of 3 (dispatch → execute → sweeps): which steps of a run may start now
(under a lock on the run's row), handing them to django-q2, and settling the run once nothing can
move.

Delivery is at-least-once (a killed worker's step is re-claimed once its lease expires, by
workflows.sweeps); success is at-most-once: every transition is a conditional UPDATE whose row
count says whether we won, as healthchecks' sendalerts does ("another process got there first").

Latency: the worker that finishes a step (workflows.execute) runs one ready successor itself
(inline) instead of round-tripping through the broker; the others go to the queue for other
workers. The inline step is claimed with the same conditional UPDATE, so it cannot also run
elsewhere."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from workflows import dag, transitions
from workflows.models import StepRun, WorkflowRun

log = logging.getLogger(__name__)
WORKER = transitions.WORKER
S = StepRun.Status
# Steps that have not reached an end state (cancel stops all of them).
UNFINISHED = (S.PENDING, S.QUEUED, S.RUNNING, S.RETRYING, S.WAITING)



@dataclass
class Ready:
    id: int
    timeout: int


def advance(run_id: int) -> list[Ready]:
    """Skip steps that can never run, queue the ones whose dependencies are satisfied, settle the
    run once nothing can move. Returns the steps this call queued (the caller hands them out).

    Runs under a lock on the run's row: two workers finishing the two branches of a fan-in at the
    same moment would otherwise each read the other's step as unfinished and neither would queue
    the join. With the lock, whoever reads second sees both."""
    with transaction.atomic(savepoint=False):
        list(WorkflowRun.objects.select_for_update().filter(pk=run_id).values_list("id"))
        return _advance_locked(run_id)


def _advance_locked(run_id: int) -> list[Ready]:
    rows = list(StepRun.objects.filter(run_id=run_id).values_list("id", "name", "status", "optional",
                                                                  "depends_on", "timeout_seconds"))
    states = {name: (status, optional) for _, name, status, optional, _, _ in rows}
    queued: list[Ready] = []
    now = timezone.now()
    changed = True
    while changed:  # skipping one step may block another: repeat until nothing changes
        changed = False
        for step_id, name, _status, optional, deps, timeout in rows:
            if states[name][0] != S.PENDING:
                continue
            verdict = dag.dependency_state(deps, states)
            if verdict == dag.BLOCKED:
                if StepRun.objects.filter(pk=step_id, status=S.PENDING).update(
                        status=S.SKIPPED, finished_at=now, error="a required dependency did not succeed"):
                    states[name] = (S.SKIPPED, optional)
                    changed = True
            elif verdict == dag.SATISFIED:
                if StepRun.objects.filter(pk=step_id, status=S.PENDING).update(status=S.QUEUED, queued_at=now):
                    queued.append(Ready(step_id, timeout))
                states[name] = (S.QUEUED, optional)  # queued by us or by a concurrent advance
    if not queued:
        settle_run(run_id, list(states.values()))
    return queued


def dispatch_ready(run_id: int) -> list[int]:
    """Queue every step of the run that may start now and hand it to the workers."""
    ready = advance(run_id)
    for r in ready:
        enqueue(r.id)
    return [r.id for r in ready]


def _enqueue_all(step_ids: list[int]) -> None:
    for step_id in step_ids:
        enqueue(step_id)


def enqueue(step_id: int) -> None:
    # save=False: the StepRun row is the record of a step; django-q2 storing every successful task
    # as well (and pruning its table under a lock on each save) would halve throughput.
    async_task("workflows.execute.execute_step", step_id, task_name=f"step-{step_id}", group="steps", save=False)


def settle_run(run_id: int, states: list[tuple[str, bool]] | None = None) -> str | None:
    """Derive the run's status from its steps; finish it (audited) once nothing can move."""
    if states is None:
        states = list(StepRun.objects.filter(run_id=run_id).values_list("status", "optional"))
    final = dag.run_outcome(states)
    if final is None:
        return None
    error = ""
    if final == WorkflowRun.Status.FAILED:
        failed = StepRun.objects.filter(run_id=run_id, status=S.FAILED, optional=False).order_by("finished_at").first()
        if failed:
            error = f"step {failed.name} failed: {failed.error}"[:2000]
    return final if transitions.finish_run(run_id, final, error) else None
