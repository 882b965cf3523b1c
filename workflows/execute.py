"""Executing a step on a worker: claim it (conditional UPDATE, with a lease), run its action under a
watch that renews the lease and stops it on cancel or timeout, and record the outcome.

Every write of the worker holding a step matches the step's claim number (`claims`), the fencing
token: a worker that lost its step (its lease was swept, the run was cancelled) never writes over
whoever holds it now. A worker process that gets SIGTERM mid-step hands the step back at once
(released: queued again, the attempt not counted) instead of leaving it to its lease."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from core import safejson
from workflows import dag, transitions
from workflows.dispatch import (
    Q_TIMEOUT_MARGIN,
    S,
    _advance_locked,
    dispatch_ready,
    enqueue,
    enqueue_at_commit,
    q_timeout,
    run_length,
)
from workflows.models import StepRun, WorkflowRun
from workflows.steps import ACTIONS, AwaitApproval, StepContext, StepError, StepInterrupted

log = logging.getLogger(__name__)


def lease_seconds() -> float:
    return float(settings.HMS_STEP_LEASE_SECONDS)


def worker_id() -> str:
    # Per call, not at import: django-q2 forks its workers after this module is loaded.
    return f"{socket.gethostname()}:{os.getpid()}"[:100]


def _mine(step: StepRun, status: str = S.RUNNING) -> QuerySet[StepRun]:
    """The step's row if it is still this worker's claim (the fence of every write we make)."""
    return StepRun.objects.filter(pk=step.pk, status=status, claims=step.claims)


def _claim(step_id: int, *, mark_run_started: bool = True, fits: float | None = None) -> StepRun | None:
    # Only QUEUED steps: a RUNNING step whose lease expired is the controller's to re-deliver
    # (workflows.sweeps), which counts it as a lost worker and audits it; taking it over here
    # would do neither. Only steps of a runnable run: a paused run's steps wait for its resume.
    # `fits`: only a step whose run length fits this task's time budget (a longer one is sent on
    # with a task timeout of its own, see execute_step).
    now = timezone.now()
    mine = StepRun.objects.filter(pk=step_id, status=S.QUEUED, attempts__lt=F("max_attempts"),
                                  run__status__in=WorkflowRun.RUNNABLE)
    if fits is not None:
        mine = mine.filter(Q(timeout_seconds__lte=int(fits)) | Q(action="approval"))
    won = (
        mine.update(status=S.RUNNING, attempts=F("attempts") + 1, claims=F("claims") + 1,
                lease_until=now + timedelta(seconds=lease_seconds()), started_at=now, finished_at=None,
                error="", worker=worker_id())
    )
    if not won:
        return None  # another worker got there first, or the step/run is finished or cancelled
    step = StepRun.objects.select_related("run", "run__actor", "run__acting_user").get(pk=step_id)
    if mark_run_started and step.run.status == WorkflowRun.Status.PENDING:
        WorkflowRun.objects.filter(pk=step.run_id, status=WorkflowRun.Status.PENDING).update(
            status=WorkflowRun.Status.RUNNING, started_at=now)
    return step


def execute_step(step_id: int, task_timeout: float | None = None) -> str:
    """The django-q2 task. Runs the step, then keeps running a ready successor inline while the
    task's time budget allows; returns the last outcome (kept in django-q2's result).

    `task_timeout`: this task's own django-q2 timeout, when it was enqueued as a long step's
    (dispatch.enqueue); otherwise the cluster's. A step longer than this task's budget is not
    claimed here but sent on with a timeout of its own, so it runs as long as its `timeout` says.

    In a qcluster worker process, SIGTERM while this runs releases the step held at that moment
    and then ends the process, as SIGTERM would have without us (see Termination)."""
    began = time.monotonic()
    limit = float(task_timeout or q_timeout()) - Q_TIMEOUT_MARGIN
    term = Termination.install()
    try:
        step = _claim(step_id, fits=limit)
        if step is None:
            return _send_on_if_long(step_id, limit)
        while True:
            if term.requested:  # SIGTERM came between two steps of a chain, or before the first ran
                return release(step)
            budget = limit - (time.monotonic() - began)
            outcome, step = _execute_one(step, budget, term)
            if step is None:
                return outcome
    finally:
        term.uninstall()


def _send_on_if_long(step_id: int, limit: float) -> str:
    """A queued step too long for this task (enqueued by a caller that knew only its id): enqueue
    it again with a task timeout of its own. Safe twice: the claim decides who runs it."""
    row = (StepRun.objects.filter(pk=step_id, status=S.QUEUED, timeout_seconds__gt=int(limit))
           .exclude(action="approval").values_list("action", "timeout_seconds").first())
    if row is None:
        return "not claimed"
    enqueue(step_id, run_length(*row))
    return "sent on with a longer task timeout"


def _execute_one(step: StepRun, budget: float, term: Termination | None = None) -> tuple[str, StepRun | None]:
    """Run one claimed step; on success, the next step to run inline (already claimed) or None."""
    run = step.run
    outputs = dict(StepRun.objects.filter(run_id=run.pk, status=S.SUCCEEDED).values_list("name", "output"))
    started = time.monotonic()
    timeout = max(1.0, min(float(step.timeout_seconds), budget))
    # The steps act with the rights of whoever set the run going last (its starter, or the user
    # who retried it: checked when they clicked).
    ctx = StepContext(run.pk, step.name, step.params, run.data, outputs, timeout, step.attempts, actor=run.acting_as)
    watch = Watch(step.pk, step.claims, ctx, timeout)
    term = term or Termination()
    try:
        try:
            watch.start()
            with term.armed():
                output = ACTIONS[step.action].fn(ctx)
        finally:
            watch.finish()
    except WorkerStopping:
        return release(step), None
    except AwaitApproval as wait:
        return _await_approval(step, wait.prompt), None
    except Exception as exc:  # a step's failure is data, not a crash of the worker
        watch.finish()
        if watch.reason == "cancelled":
            # cancel_run already ended the step; leave a trace that the work itself stopped too.
            _mine(step, S.CANCELLED).update(error="stopped: the run was cancelled while this step was running")
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
        won = _mine(step).update(status=S.SUCCEEDED, output=output, finished_at=timezone.now(), lease_until=None)
        if not won:
            return "lost lease", None  # cancelled, or swept after our lease lapsed: the result is dropped
        ready = _advance_locked(run.pk)
        elapsed_budget = budget - (time.monotonic() - started)
        if ready and ready[0].timeout <= elapsed_budget:
            inline = _claim(ready[0].id, mark_run_started=False)
            ready = ready[1:]
        # Visible to the workers once this commits, not before (dispatch.enqueue_at_commit).
        enqueue_at_commit(ready)
    return "succeeded", inline


def release(step: StepRun) -> str:
    """Hand the step this worker holds back to the queue at once (its worker is stopping): queued
    again and enqueued for another worker, the attempt given back, so a stopped worker spends
    neither the step's retries nor its lost-worker re-deliveries."""
    message = f"released: its worker ({worker_id()}) was stopped (SIGTERM) while this step was running"
    with transaction.atomic():
        if not transitions.release_step(step, now=timezone.now(), error=message):
            return "lost lease"  # finished, cancelled or swept meanwhile: nothing of ours to hand back
        transaction.on_commit(partial(enqueue, step.pk, run_length(step.action, step.timeout_seconds)))
    log.warning("step %s (run %s) released: worker stopping", step.name, step.run_id)
    return "released"


def _await_approval(step: StepRun, prompt: str) -> str:
    """Park the step without holding a worker; its timeout is the deadline for a decision."""
    deadline = timezone.now() + timedelta(seconds=step.timeout_seconds)
    _mine(step).update(status=S.WAITING, lease_until=deadline, output={"prompt": prompt})
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
    won = _mine(step).update(status=status, error=message[:2000], lease_until=None, not_before=not_before,
                             finished_at=finished)
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

    def __init__(self, step_id: int, claim: int, ctx: StepContext, timeout: float) -> None:
        self.step_id, self.claim, self.ctx = step_id, claim, ctx
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
                renewed = StepRun.objects.filter(pk=self.step_id, status=S.RUNNING, claims=self.claim).update(
                    lease_until=timezone.now() + timedelta(seconds=lease_seconds()))
                if not renewed:
                    self._interrupt("cancelled")
                    return
        except Exception:
            log.exception("heartbeat of step %s failed", self.step_id)
        finally:
            connection.close()  # this thread's own connection


class WorkerStopping(BaseException):  # noqa: N818 - a stop request, not an error
    """Raised in a worker's main thread by SIGTERM while a step's action runs. A BaseException so
    that an action's own `except Exception` cannot swallow it."""


# True in qcluster worker processes (django-q2's post_spawn signal, connected in apps.py): only
# they turn SIGTERM into a release. A web process, the controller or a test calling execute_step
# in-process keeps its own SIGTERM handling.
IN_WORKER = False


def mark_worker_process(**_: Any) -> None:
    global IN_WORKER
    IN_WORKER = True


class Termination:
    """SIGTERM in a qcluster worker while execute_step runs.

    django-q2's workers keep SIGTERM's default (its sentinel sets SIG_DFL before forking them):
    the process dies at once and its step stays RUNNING until the lease lapses. While a step is in
    hand we catch it instead: the handler notes it and, while the action runs, raises
    WorkerStopping to end the action; the engine then releases the step (see release()) and the
    process ends by SIGTERM after all (die()). Outside execute_step (an idle worker, holding
    nothing) the default stays. A main thread stuck in C code runs no Python handler: that worker
    is released by its lease like a lost one.
    """

    def __init__(self) -> None:
        self.requested = False
        self._armed = False
        self._installed = False
        self._previous: Any = None

    @classmethod
    def install(cls) -> Termination:
        term = cls()
        if IN_WORKER and threading.current_thread() is threading.main_thread():
            term._previous = signal.signal(signal.SIGTERM, term._on_sigterm)
            term._installed = True
        return term

    def uninstall(self) -> None:
        if not self._installed:
            return
        self._installed = False
        signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
        if self.requested:
            die()

    @contextmanager
    def armed(self) -> Iterator[None]:
        """While the action runs, SIGTERM interrupts it (elsewhere it only takes note, so that it
        never lands in the middle of the engine's own writes)."""
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.requested = True
        if self._armed:
            self._armed = False
            raise WorkerStopping("SIGTERM")


def die() -> None:
    """End this worker process the way SIGTERM would have had we not caught it."""
    log.warning("worker %s stopping on SIGTERM", worker_id())
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
