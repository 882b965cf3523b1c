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
import os
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, transaction
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
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


def run_length(action: str, timeout: int) -> int:
    """How long a step may hold a worker: its timeout, except an approval, which parks at once
    (its timeout is the deadline for a person's decision, not work)."""
    return 0 if action == "approval" else int(timeout)


def _advance_locked(run_id: int) -> list[Ready]:
    rows = list(StepRun.objects.filter(run_id=run_id).values_list(
        "id", "name", "status", "optional", "trigger_rule", "depends_on", "timeout_seconds", "action"))
    # (status, not required): a cleanup/alert step (all_done/one_failed) counts as optional.
    states = {name: (status, not dag.is_required(optional, rule)) for _, name, status, optional, rule, *_ in rows}
    # A paused run starts nothing new (the lock on its row is held: pause cannot slip in between).
    paused = WorkflowRun.objects.filter(pk=run_id, status=WorkflowRun.Status.PAUSED).exists()
    queued: list[Ready] = []
    now = timezone.now()
    changed = True
    while changed:  # skipping one step may block another: repeat until nothing changes
        changed = False
        for step_id, name, _status, _optional, rule, deps, timeout, action in rows:
            if states[name][0] != S.PENDING:
                continue
            optional = states[name][1]
            verdict = dag.dependency_state(deps, states, rule)
            if verdict == dag.BLOCKED:
                why = ("trigger rule one_failed: no dependency failed" if rule == dag.ONE_FAILED
                       else "a required dependency did not succeed")
                if StepRun.objects.filter(pk=step_id, status=S.PENDING).update(
                        status=S.SKIPPED, finished_at=now, error=why):
                    states[name] = (S.SKIPPED, optional)
                    changed = True
            elif verdict == dag.SATISFIED and not paused:
                if StepRun.objects.filter(pk=step_id, status=S.PENDING).update(status=S.QUEUED, queued_at=now):
                    queued.append(Ready(step_id, run_length(action, timeout)))
                states[name] = (S.QUEUED, optional)  # queued by us or by a concurrent advance
    if not queued:
        settle_run(run_id, list(states.values()))
    return queued


def dispatch_ready(run_id: int) -> list[int]:
    """Queue every step of the run that may start now and hand it to the workers."""
    ready = advance(run_id)
    for r in ready:
        enqueue(r.id, r.timeout)
    return [r.id for r in ready]


def _enqueue_all(ready: list[Ready]) -> None:
    for r in ready:
        enqueue(r.id, r.timeout)


def queue_commits_with_us() -> bool:
    """True when a task enqueued now commits (or rolls back) with the caller's transaction: the
    ORM broker on the database we write to, inside an atomic block, not in django-q2's sync mode
    (which would run the step right here, inside the caller's transaction)."""
    return (bool(Conf.ORM) and Conf.ORM == DEFAULT_DB_ALIAS and not Conf.SYNC
            and not transaction.get_autocommit(using=DEFAULT_DB_ALIAS))


def enqueue_at_commit(ready: list[Ready]) -> None:
    """Hand steps this transaction queued to the workers as it commits: a worker must never look
    for a step it cannot see yet. With the ORM broker the task rows are written in the transaction
    itself (they become visible together with the steps, and a rollback takes them back; the NOTIFY
    is delivered at commit): one commit per start instead of two. Any other broker (Redis) is
    handed the tasks after commit."""
    if not ready:
        return
    if queue_commits_with_us():
        _enqueue_all(ready)
    else:
        transaction.on_commit(partial(_enqueue_all, ready))


# Keep clear of django-q2's own task timeout, which would kill the worker process mid-step.
Q_TIMEOUT_MARGIN = 5.0


def q_timeout() -> float:
    return float(settings.Q_CLUSTER.get("timeout") or 300)


def long_task_timeout(length: float | None) -> int | None:
    """The django-q2 task timeout a step of this run length needs when the cluster's own is too
    short for it (None: the cluster's timeout will do). django-q2 (>= 1.5) honours a per-task
    `timeout`; its ORM broker's redelivery lock follows it (workflows.broker.LeaseORM)."""
    if length is None or length <= q_timeout() - Q_TIMEOUT_MARGIN:
        return None
    return int(length + Q_TIMEOUT_MARGIN + 1)


def enqueue(step_id: int, length: float | None = None) -> None:
    """Hand a queued step to the workers. `length` (the step's run_length, when the caller knows
    it) lets a long step's task get a timeout of its own; a caller that does not know it sends the
    default, and the worker sends a long step on with its timeout (execute_step)."""
    long = long_task_timeout(length)
    # save=False: the StepRun row is the record of a step; django-q2 storing every successful task
    # as well (and pruning its table under a lock on each save) would halve throughput.
    if long is None:
        async_task("workflows.execute.execute_step", step_id, task_name=f"step-{step_id}", group="steps", save=False,
                   broker=_broker())
    else:
        async_task("workflows.execute.execute_step", step_id, task_timeout=long, task_name=f"step-{step_id}",
                   group="steps", save=False, timeout=long, broker=_broker())


_brokers: dict[int, Any] = {}


def _broker() -> Any:
    """This process's broker for the steps queue. async_task would build one per task (for the ORM
    broker that runs close_old_connections, so the next query pays a health check; for Redis, a
    new connection pool); one per process (per pid: never one inherited across a fork) does."""
    pid = os.getpid()
    broker = _brokers.get(pid)
    if broker is None:
        _brokers.clear()
        broker = _brokers[pid] = get_broker()
    return broker


def settle_run(run_id: int, states: list[tuple[str, bool]] | None = None) -> str | None:
    """Derive the run's status from its steps; finish it (audited) once nothing can move."""
    if states is None:
        states = [(status, not dag.is_required(optional, rule)) for status, optional, rule in
                  StepRun.objects.filter(run_id=run_id).values_list("status", "optional", "trigger_rule")]
    final = dag.run_outcome(states)
    if final is None:
        return None
    error = ""
    if final == WorkflowRun.Status.FAILED:
        failed = StepRun.objects.filter(run_id=run_id, status=S.FAILED, optional=False,
                                        trigger_rule=dag.ALL_SUCCESS).order_by("finished_at").first()
        if failed:
            error = f"step {failed.name} failed: {failed.error}"[:2000]
    return final if transitions.finish_run(run_id, final, error) else None
