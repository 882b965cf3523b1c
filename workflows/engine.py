"""The Orchestrator: dispatch ready steps to django-q2, claim them under a lease, run them with a
timeout and a heartbeat, record the outcome, unblock successors and settle the run.

Delivery is at-least-once (a killed worker's step is re-claimed once its lease expires); success
is at-most-once: every transition is a conditional UPDATE whose row count says whether we won, as
healthchecks' sendalerts does ("another process got there first").

Latency: the worker that finishes a step runs one ready successor itself (inline) instead of
round-tripping through the broker; the others go to the queue for other workers. The inline step
is claimed with the same conditional UPDATE, so it cannot also run elsewhere.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django_q.tasks import async_task

from audit import events
from audit.actions import record
from core import safejson
from workflows import dag
from workflows.models import StepRun, WorkflowRun
from workflows.steps import ACTIONS, AwaitApproval, StepContext, StepError, StepInterrupted

log = logging.getLogger(__name__)
WORKER = "system:worker"
S = StepRun.Status
# Steps that have not reached an end state (cancel stops all of them).
UNFINISHED = (S.PENDING, S.QUEUED, S.RUNNING, S.RETRYING, S.WAITING)
# Keep clear of django-q2's own task timeout, which would kill the worker process mid-step.
Q_TIMEOUT_MARGIN = 5.0


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


def lease_seconds() -> float:
    return float(settings.HMS_STEP_LEASE_SECONDS)


def q_timeout() -> float:
    return float(settings.Q_CLUSTER.get("timeout") or 300)


# --- advancing a run --------------------------------------------------------------------------


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
    async_task("workflows.engine.execute_step", step_id, task_name=f"step-{step_id}", group="steps", save=False)


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
    with transaction.atomic():
        won = WorkflowRun.objects.filter(pk=run_id, status__in=WorkflowRun.ACTIVE).update(
            status=final, finished_at=timezone.now(), error=error)
        if won:
            run = WorkflowRun.objects.get(pk=run_id)
            record(events.WORKFLOW_FINISH, actor=WORKER, target=run,
                   payload={"flowId": run.flow_slug, "runId": run_id, "status": final})
    return final if won else None


# --- execution --------------------------------------------------------------------------------


def _claim(step_id: int, *, mark_run_started: bool = True) -> StepRun | None:
    now = timezone.now()
    # A RUNNING step whose lease expired belongs to a dead worker: a late duplicate delivery may
    # take it over, exactly as the controller's sweep would.
    claimable = Q(status=S.QUEUED) | Q(status=S.RUNNING, lease_until__lt=now)
    won = (
        StepRun.objects.filter(claimable, pk=step_id, attempts__lt=F("max_attempts"),
                               run__status__in=WorkflowRun.ACTIVE)
        .update(status=S.RUNNING, attempts=F("attempts") + 1, lease_until=now + timedelta(seconds=lease_seconds()),
                started_at=now, finished_at=None, error="")
    )
    if not won:
        return None  # another worker got there first, or the step/run is finished or cancelled
    step = StepRun.objects.select_related("run", "run__actor").get(pk=step_id)
    if mark_run_started and step.run.status == WorkflowRun.Status.PENDING:
        WorkflowRun.objects.filter(pk=step.run_id, status=WorkflowRun.Status.PENDING).update(
            status=WorkflowRun.Status.RUNNING, started_at=now)
    return step


def execute_step(step_id: int) -> str:
    """The django-q2 task. Runs the step, then keeps running a ready successor inline while the
    task's time budget allows; returns the last outcome (kept in django-q2's result)."""
    began = time.monotonic()
    step = _claim(step_id)
    if step is None:
        return "not claimed"
    while True:
        budget = q_timeout() - Q_TIMEOUT_MARGIN - (time.monotonic() - began)
        outcome, step = _execute_one(step, budget)
        if step is None:
            return outcome


def _execute_one(step: StepRun, budget: float) -> tuple[str, StepRun | None]:
    """Run one claimed step; on success, the next step to run inline (already claimed) or None."""
    run = step.run
    outputs = dict(StepRun.objects.filter(run_id=run.pk, status=S.SUCCEEDED).values_list("name", "output"))
    started = time.monotonic()
    timeout = max(1.0, min(float(step.timeout_seconds), budget))
    ctx = StepContext(run.pk, step.name, step.params, run.data, outputs, timeout, step.attempts, actor=run.actor)
    watch = Watch(step.pk, step.attempts, ctx, timeout)
    try:
        try:
            watch.start()
            output = ACTIONS[step.action].fn(ctx)
        finally:
            watch.finish()
    except AwaitApproval as wait:
        return _await_approval(step, wait.prompt), None
    except Exception as exc:  # a step's failure is data, not a crash of the worker
        watch.finish()
        if watch.reason == "cancelled":
            # cancel_run already ended the step; leave a trace that the work itself stopped too.
            StepRun.objects.filter(pk=step.pk, status=S.CANCELLED, attempts=step.attempts).update(
                error="stopped: the run was cancelled while this step was running")
            return "cancelled", None
        if watch.reason == "timeout":
            message = f"timed out after {timeout:g}s"
        elif isinstance(exc, StepError):
            message = str(exc)
        else:
            message = f"{exc.__class__.__name__}: {exc}"
        return _fail_attempt(step, message), None
    if (why := safejson.problem(output)) is not None:
        # A service answered with text the database refuses (say a NUL): a failed attempt with a
        # reason, not an exception that would leave the step running until its lease lapses.
        return _fail_attempt(step, f"the step's output cannot be stored: {why}"), None
    # One transaction (one commit) for: the success, the successors it unblocks, and the claim of
    # the one this worker runs next. The run row is locked first (see advance()).
    inline: StepRun | None = None
    with transaction.atomic():
        list(WorkflowRun.objects.select_for_update().filter(pk=run.pk).values_list("id"))
        won = StepRun.objects.filter(pk=step.pk, status=S.RUNNING, attempts=step.attempts).update(
            status=S.SUCCEEDED, output=output, finished_at=timezone.now(), lease_until=None)
        if not won:
            return "lost lease", None  # cancelled, or swept after our lease lapsed: the result is dropped
        ready = _advance_locked(run.pk)
        elapsed_budget = budget - (time.monotonic() - started)
        if ready and ready[0].timeout <= elapsed_budget:
            inline = _claim(ready[0].id, mark_run_started=False)
            ready = ready[1:]
        # Enqueued after commit: a worker must not look for a step it cannot see yet.
        if ready:
            transaction.on_commit(partial(_enqueue_all, [r.id for r in ready]))
    return "succeeded", inline


def _await_approval(step: StepRun, prompt: str) -> str:
    """Park the step without holding a worker; its timeout is the deadline for a decision."""
    deadline = timezone.now() + timedelta(seconds=step.timeout_seconds)
    StepRun.objects.filter(pk=step.pk, status=S.RUNNING, attempts=step.attempts).update(
        status=S.WAITING, lease_until=deadline, output={"prompt": prompt})
    return "waiting for approval"


def _fail_attempt(step: StepRun, message: str) -> str:
    message = message.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")  # storable text
    retry = step.attempts < step.max_attempts
    now = timezone.now()
    delay = dag.backoff_delay(step.backoff_seconds, step.attempts) if retry else 0.0
    if retry:
        # The controller re-queues it once not_before passes (second-grained, survives restarts).
        status, not_before, finished = S.RETRYING, now + timedelta(seconds=delay), None
    else:
        status, not_before, finished = S.FAILED, None, now
    won = StepRun.objects.filter(pk=step.pk, status=S.RUNNING, attempts=step.attempts).update(
        status=status, error=message[:2000], lease_until=None, not_before=not_before, finished_at=finished)
    if not won:
        return "lost lease"
    if retry:
        return "retrying"
    dispatch_ready(step.run_id)  # dependents are skipped (or go on, when the step was optional)
    return "failed"


class Watch:
    """Heartbeat, cancel and timeout for one running step.

    A thread renews the lease every second with a conditional UPDATE; when the row is no longer
    ours (the run was cancelled, or the lease was swept) or the deadline passes, it sets ctx.stop
    and interrupts the worker's main thread with SIGUSR2 (django-q2 keeps SIGALRM for its own
    timeout). After interrupting, it stops renewing: a worker stuck in C code loses its lease and
    the step is re-claimed elsewhere.
    """

    def __init__(self, step_id: int, attempt: int, ctx: StepContext, timeout: float) -> None:
        self.step_id, self.attempt, self.ctx = step_id, attempt, ctx
        self.deadline = time.monotonic() + timeout
        self.reason = ""
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.interval = min(1.0, lease_seconds() / 3)
        self.main_ident = threading.get_ident()
        self.use_signal = threading.current_thread() is threading.main_thread()
        self.previous: Any = None
        self.thread = threading.Thread(target=self._run, name=f"step-{step_id}-watch", daemon=True)

    def start(self) -> None:
        if self.use_signal:
            self.previous = signal.signal(signal.SIGUSR2, self._on_signal)
        self.thread.start()

    def finish(self) -> None:
        with self.lock:
            if self.done.is_set():
                return
            self.done.set()
            if self.use_signal:
                # Never back to SIG_DFL (which terminates): a signal sent just before finish() must
                # find a harmless disposition.
                signal.signal(signal.SIGUSR2, self.previous if callable(self.previous) else signal.SIG_IGN)

    def _on_signal(self, signum: int, frame: Any) -> None:
        raise StepInterrupted(self.reason or "interrupted")

    def _interrupt(self, reason: str) -> None:
        with self.lock:
            if self.done.is_set():
                return
            self.reason = reason
            self.ctx.stop.set()
            if self.use_signal:
                signal.pthread_kill(self.main_ident, signal.SIGUSR2)

    def _run(self) -> None:
        try:
            while not self.done.wait(max(0.0, min(self.interval, self.deadline - time.monotonic()))):
                if time.monotonic() >= self.deadline:
                    self._interrupt("timeout")
                    return
                renewed = StepRun.objects.filter(pk=self.step_id, status=S.RUNNING, attempts=self.attempt).update(
                    lease_until=timezone.now() + timedelta(seconds=lease_seconds()))
                if not renewed:
                    self._interrupt("cancelled")
                    return
        except Exception:
            log.exception("heartbeat of step %s failed", self.step_id)
        finally:
            connection.close()  # this thread's own connection


# --- sweeping (called by the controller) -------------------------------------------------------


def sweep_expired_leases() -> int:
    """A step whose worker died mid-run is re-queued (or failed when out of attempts); an approval
    nobody decided in time fails. Audited: a transition nobody asked for."""
    now = timezone.now()
    swept = 0
    expired = StepRun.objects.filter(status__in=(S.RUNNING, S.WAITING), lease_until__lt=now).select_related("run")
    for step in expired:
        waiting = step.status == S.WAITING
        retry = not waiting and step.attempts < step.max_attempts
        error = ("approval timed out: nobody decided before the deadline" if waiting
                 else "lease expired: the worker running this step stopped answering")
        with transaction.atomic():
            won = StepRun.objects.filter(pk=step.pk, status=step.status, attempts=step.attempts,
                                         lease_until__lt=now).update(
                status=S.QUEUED if retry else S.FAILED, error=error, lease_until=None,
                queued_at=now if retry else None, finished_at=None if retry else now)
            if won:
                record(events.WORKFLOW_LEASE_EXPIRED, actor="system:controller", target=step.run,
                       payload={"runId": step.run_id, "step": step.name, "attempts": step.attempts,
                                "requeued": retry, "approval": waiting})
        if not won:
            continue
        swept += 1
        if retry:
            enqueue(step.pk)
        else:
            dispatch_ready(step.run_id)
    return swept


def promote_due_retries() -> int:
    """Steps whose backoff has passed go back to the workers."""
    now = timezone.now()
    ids = list(StepRun.objects.filter(status=S.RETRYING, not_before__lte=now).values_list("id", flat=True)[:500])
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
    due = set(StepRun.objects.filter(expired | Q(status=S.RETRYING, not_before__lte=now))
              .values_list("status", flat=True).distinct())
    out = {"swept": 0, "retried": 0}
    if due & {S.RUNNING, S.WAITING}:
        out["swept"] = sweep_expired_leases()
    if S.RETRYING in due:
        out["retried"] = promote_due_retries()
    return out


# --- read models ------------------------------------------------------------------------------


def step_summary(s: StepRun) -> dict[str, Any]:
    return {
        "name": s.name,
        "action": s.action,
        "status": s.status,
        "optional": s.optional,
        "dependsOn": s.depends_on,
        "attempts": s.attempts,
        "maxAttempts": s.max_attempts,
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
        "data": run.data,
        "error": run.error,
        "createdAt": run.created_at,
        "startedAt": run.started_at,
        "finishedAt": run.finished_at,
        "steps": [step_summary(s) for s in run.steps.all()],
    }
