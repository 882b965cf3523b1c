"""Executing a step on a worker: claim it (conditional UPDATE, with a lease), run its action under a
watch that renews the lease and stops it on cancel or timeout, and record the outcome."""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from core import safejson
from workflows import dag
from workflows.dispatch import S, _advance_locked, _enqueue_all, dispatch_ready
from workflows.models import StepRun, WorkflowRun
from workflows.steps import ACTIONS, AwaitApproval, StepContext, StepError, StepInterrupted

log = logging.getLogger(__name__)
# Keep clear of django-q2's own task timeout, which would kill the worker process mid-step.
Q_TIMEOUT_MARGIN = 5.0


def lease_seconds() -> float:
    return float(settings.HMS_STEP_LEASE_SECONDS)


def q_timeout() -> float:
    return float(settings.Q_CLUSTER.get("timeout") or 300)


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
