"""The engine in-process: scheduling, inline successors, retries, optional steps, timeouts,
cancel, approvals and retry_run. Real database; the tests play the worker by calling
execute_step (the qcluster tests in test_qcluster.py run the same flows across processes)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db.models import F

from audit.models import AuditEntry
from tests.workflows.helpers import drain, make_flow, py, statuses, step
from workflows import actions, execute, sweeps
from workflows.models import StepRun, WorkflowRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_superuser("alice", "alice@example.org", "pw-alice-123")


def start(alice: User, flow, data=None, capture=None) -> WorkflowRun:
    with capture(execute=True):
        outcome = actions.start_run(flow, data or {}, actor=alice)
    assert outcome.run is not None
    return outcome.run


def test_start_writes_one_audit_entry_and_queues_only_roots(alice, django_capture_on_commit_callbacks) -> None:
    flow = make_flow("f", [step("a"), step("b", "a"), step("c")])
    before = AuditEntry.objects.count()
    run = start(alice, flow, capture=django_capture_on_commit_callbacks)
    assert AuditEntry.objects.count() - before == 1
    assert statuses(run) == {"a": "queued", "b": "pending", "c": "queued"}


def test_a_chain_runs_inline_in_one_task(alice, django_capture_on_commit_callbacks) -> None:
    flow = make_flow("chain", [step("a"), step("b", "a"), step("c", "b")])
    run = start(alice, flow, capture=django_capture_on_commit_callbacks)
    first = StepRun.objects.get(run=run, name="a")
    assert execute.execute_step(first.pk) == "succeeded"
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert set(statuses(run).values()) == {"succeeded"}
    assert AuditEntry.objects.filter(action="workflow.finish", target_id=str(run.pk)).count() == 1


def test_fan_out_runs_one_branch_inline_and_queues_the_other(alice, django_capture_on_commit_callbacks) -> None:
    flow = make_flow("fan", [step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c")])
    run = start(alice, flow, capture=django_capture_on_commit_callbacks)
    execute.execute_step(StepRun.objects.get(run=run, name="a").pk)
    st = statuses(run)
    assert sorted([st["b"], st["c"]]) == ["queued", "succeeded"]
    assert st["d"] == "pending"  # fan-in waits for both branches
    assert drain(run).status == "succeeded"
    assert statuses(run)["d"] == "succeeded"


def test_outputs_flow_into_later_steps(alice, django_capture_on_commit_callbacks) -> None:
    flow = make_flow("tpl", [py("a", "echo", kwargs={"user": "$data.user"}),
                             py("b", "echo", "a", kwargs={"from_a": "$steps.a.kwargs.user", "s": "u=${data.user}"})])
    run = drain(start(alice, flow, {"user": 42}, capture=django_capture_on_commit_callbacks))
    assert run.status == "succeeded"
    assert StepRun.objects.get(run=run, name="b").output == {"kwargs": {"from_a": 42, "s": "u=42"}}


def test_retries_with_backoff_then_success(alice, django_capture_on_commit_callbacks) -> None:
    flow = make_flow("flaky", [py("a", "flaky", kwargs={"fail_attempts": 2}, retries=3, backoff=2), step("b", "a")])
    run = start(alice, flow, capture=django_capture_on_commit_callbacks)
    a = StepRun.objects.get(run=run, name="a")
    execute.execute_step(a.pk)
    a.refresh_from_db()
    assert a.status == "retrying" and a.attempts == 1 and "fails on purpose" in a.error
    assert 1.5 < (a.not_before - a.started_at).total_seconds() < 3  # first delay = backoff
    assert sweeps.sweep_due() == {"swept": 0, "retried": 0}  # not due yet
    run = drain(run)
    a.refresh_from_db()
    assert run.status == "succeeded" and a.attempts == 3 and a.output == {"attempt": 3}


def test_retries_exhausted_fail_the_run_and_dependents_never_start(alice, django_capture_on_commit_callbacks) -> None:
    flow = make_flow("doomed", [py("a", "fail", retries=1, backoff=0), step("b", "a"), step("c", "b"),
                                step("side")])
    run = drain(start(alice, flow, capture=django_capture_on_commit_callbacks))
    assert run.status == "failed"
    assert "step a failed" in run.error
    assert statuses(run) == {"a": "failed", "b": "skipped", "c": "skipped", "side": "succeeded"}
    a = StepRun.objects.get(run=run, name="a")
    assert a.attempts == a.max_attempts == 2
    assert not StepRun.objects.filter(run=run, name__in=["b", "c"], started_at__isnull=False).exists()


def test_an_optional_failure_neither_fails_the_run_nor_blocks(alice, django_capture_on_commit_callbacks) -> None:
    flow = make_flow("opt", [py("a", "fail", optional=True), step("b", "a")])
    run = drain(start(alice, flow, capture=django_capture_on_commit_callbacks))
    assert statuses(run) == {"a": "failed", "b": "succeeded"}
    assert run.status == "succeeded"


def test_a_step_that_overruns_its_timeout_fails(alice, django_capture_on_commit_callbacks) -> None:
    flow = make_flow("slow", [step("a", action="sleep", params={"seconds": 30}, timeout=1), step("b", "a")])
    run = drain(start(alice, flow, capture=django_capture_on_commit_callbacks))
    a = StepRun.objects.get(run=run, name="a")
    assert a.status == "failed" and a.error == "timed out after 1s"
    assert run.status == "failed" and statuses(run)["b"] == "skipped"


def test_cancel_stops_pending_steps_and_is_audited(alice, django_capture_on_commit_callbacks) -> None:
    flow = make_flow("c", [step("a"), step("b", "a")])
    run = start(alice, flow, capture=django_capture_on_commit_callbacks)
    assert actions.cancel_run(run, actor=alice)
    assert not actions.cancel_run(run, actor=alice)  # already finished: refused, not audited twice
    assert execute.execute_step(StepRun.objects.get(run=run, name="a").pk) == "not claimed"
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert statuses(run) == {"a": "cancelled", "b": "cancelled"}
    assert AuditEntry.objects.filter(action="workflow.cancel", target_id=str(run.pk)).count() == 1


def test_approval_waits_then_approve_lets_dependents_run(alice, django_capture_on_commit_callbacks) -> None:
    flow = make_flow("appr", [step("gate", action="approval", params={"prompt": "Ship it?"},
                                      allow_self_approval=True), step("b", "gate")])
    run = drain(start(alice, flow, capture=django_capture_on_commit_callbacks))
    gate = StepRun.objects.get(run=run, name="gate")
    assert run.status == "running" and gate.status == "waiting" and gate.output == {"prompt": "Ship it?"}
    with django_capture_on_commit_callbacks(execute=True):
        actions.decide_approval(run, "gate", approve=True, actor=alice)
    with pytest.raises(actions.DecisionRefused):
        actions.decide_approval(run, "gate", approve=False, actor=alice)  # decided once only
    run = drain(run)
    assert run.status == "succeeded"
    assert StepRun.objects.get(run=run, name="gate").output["by"] == "alice"
    assert AuditEntry.objects.filter(action="workflow.approve", target_id=str(run.pk)).count() == 1


def test_rejecting_fails_the_run(alice, django_capture_on_commit_callbacks) -> None:
    flow = make_flow("rej", [step("gate", action="approval", allow_self_approval=True), step("b", "gate")])
    run = drain(start(alice, flow, capture=django_capture_on_commit_callbacks))
    with django_capture_on_commit_callbacks(execute=True):
        actions.decide_approval(run, "gate", approve=False, actor=alice, comment="not today")
    run.refresh_from_db()
    assert run.status == "failed" and statuses(run) == {"gate": "failed", "b": "skipped"}
    assert "rejected by alice: not today" in StepRun.objects.get(run=run, name="gate").error


def test_retry_run_restarts_from_the_failed_step_only(alice, django_capture_on_commit_callbacks) -> None:
    flow = make_flow("rr", [py("a", "echo"), py("b", "flaky", "a", kwargs={"fail_attempts": 1}), step("c", "b")])
    run = drain(start(alice, flow, capture=django_capture_on_commit_callbacks))
    assert run.status == "failed"
    a_done = StepRun.objects.get(run=run, name="a").finished_at
    with pytest.raises(actions.RetryRefused):
        actions.retry_run(WorkflowRun.objects.create(definition=flow, flow_slug="rr", actor=alice), actor=alice)
    with django_capture_on_commit_callbacks(execute=True):
        assert actions.retry_run(run, actor=alice).steps == ["b", "c"]
    run = drain(run)
    assert run.status == "succeeded"
    a, b = StepRun.objects.get(run=run, name="a"), StepRun.objects.get(run=run, name="b")
    assert a.attempts == 1 and a.finished_at == a_done  # the step that succeeded never ran again
    assert b.attempts == 2 and b.max_attempts == 2
    assert AuditEntry.objects.filter(action="workflow.retry", target_id=str(run.pk)).count() == 1
    assert AuditEntry.objects.filter(action="workflow.finish", target_id=str(run.pk)).count() == 2


def _lose_worker(step: StepRun) -> None:
    """A worker claimed the step and died: RUNNING under its claim, the lease in the past."""
    from datetime import timedelta

    from django.utils import timezone

    StepRun.objects.filter(pk=step.pk).update(status="running", attempts=F("attempts") + 1, claims=F("claims") + 1,
                                              worker="gone:4242", lease_until=timezone.now() - timedelta(1))


def test_a_lost_worker_is_redelivered_without_spending_a_retry(alice, django_capture_on_commit_callbacks) -> None:
    run = start(alice, make_flow("lease", [step("a"), step("b", "a")]), capture=django_capture_on_commit_callbacks)
    a = StepRun.objects.get(run=run, name="a")  # retries: 0
    _lose_worker(a)
    assert sweeps.sweep_due() == {"swept": 1, "retried": 0}
    a.refresh_from_db()
    assert (a.status, a.attempts, a.redeliveries) == ("queued", 0, 1)  # the attempt is given back
    assert a.error.startswith("worker lost: its lease expired (gone:4242 stopped answering)")
    assert drain(run).status == "succeeded"
    a.refresh_from_db()
    assert (a.attempts, a.max_attempts, a.redeliveries, a.claims, a.error) == (1, 1, 1, 2, "")
    entry = AuditEntry.objects.get(action="workflow.lease_expired", target_id=str(run.pk))
    assert entry.payload["cause"] == "worker_lost" and entry.payload["requeued"] is True


def test_a_step_losing_its_worker_too_often_fails_naming_the_cause(alice, settings,
                                                                   django_capture_on_commit_callbacks) -> None:
    settings.HMS_STEP_REDELIVERIES = 3
    run = start(alice, make_flow("lease2", [step("a", retries=2), step("b", "a")]),
                capture=django_capture_on_commit_callbacks)
    a = StepRun.objects.get(run=run, name="a")
    for lost in range(1, 5):
        _lose_worker(a)
        assert sweeps.sweep_expired_leases() == 1
        a.refresh_from_db()
        assert a.status == ("queued" if lost <= 3 else "failed") and a.redeliveries == min(lost, 3)
    assert a.attempts == 1 and a.max_attempts == 3  # its retries untouched: a lost worker is not its failure
    assert a.error.startswith("worker lost 4 times: ")
    run.refresh_from_db()
    assert run.status == "failed" and statuses(run) == {"a": "failed", "b": "skipped"}
    assert "worker lost 4 times" in run.error
    assert AuditEntry.objects.filter(action="workflow.lease_expired", target_id=str(run.pk)).count() == 4
    # A manual retry is a new round of re-deliveries as well as of attempts.
    with django_capture_on_commit_callbacks(execute=True):
        actions.retry_run(run, actor=alice)
    a.refresh_from_db()
    assert a.redeliveries == 0 and a.status == "queued"
    assert drain(run).status == "succeeded"


def test_no_redeliveries_allowed_fails_at_the_first_loss(alice, settings, django_capture_on_commit_callbacks) -> None:
    settings.HMS_STEP_REDELIVERIES = 0
    run = start(alice, make_flow("lease3", [step("a", retries=3)]), capture=django_capture_on_commit_callbacks)
    a = StepRun.objects.get(run=run, name="a")
    _lose_worker(a)
    sweeps.sweep_expired_leases()
    a.refresh_from_db()
    assert a.status == "failed" and a.error.startswith("worker lost 1 time: ")


def test_a_stale_worker_cannot_write_over_the_redelivered_claim(alice, django_capture_on_commit_callbacks) -> None:
    from datetime import timedelta

    from django.utils import timezone

    run = start(alice, make_flow("stale", [step("a")]), capture=django_capture_on_commit_callbacks)
    a = StepRun.objects.get(run=run, name="a")
    stale = execute._claim(a.pk)  # a worker that froze (SIGSTOP, a long GC pause) rather than died
    assert stale is not None and stale.attempts == 1
    StepRun.objects.filter(pk=a.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    sweeps.sweep_expired_leases()
    fresh = execute._claim(a.pk)
    assert fresh is not None and (fresh.attempts, fresh.claims) == (1, 2)  # same attempt number, new claim
    # The frozen worker wakes up: its heartbeat and its result both miss (the fence is the claim).
    assert execute._mine(stale).update(lease_until=timezone.now()) == 0
    assert execute._fail_attempt(stale, "late") == "lost lease"
    assert execute._execute_one(fresh, 60) == ("succeeded", None)
    assert StepRun.objects.get(pk=a.pk).status == "succeeded"


def test_sigterm_mid_step_releases_it_at_once(alice, monkeypatch, django_capture_on_commit_callbacks) -> None:
    """In a qcluster worker, SIGTERM during the action ends it, hands the step back (queued, the
    attempt given back, nothing counted against retries or re-deliveries), re-enqueues it, then
    ends the process (die(), stubbed here)."""
    import os
    import signal
    import threading

    from django_q.models import OrmQ

    run = start(alice, make_flow("term", [step("a", action="sleep", params={"seconds": 30})]),
                capture=django_capture_on_commit_callbacks)
    a = StepRun.objects.get(run=run, name="a")
    died: list[bool] = []
    monkeypatch.setattr(execute, "IN_WORKER", True)
    monkeypatch.setattr(execute, "die", lambda: died.append(True))
    # Should the handler not be installed, this one keeps the SIGTERM from ending pytest.
    previous = signal.signal(signal.SIGTERM, lambda *_: died.append(False))
    queued_before = OrmQ.objects.count()
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    try:
        timer.start()
        with django_capture_on_commit_callbacks(execute=True):
            assert execute.execute_step(a.pk) == "released"
    finally:
        timer.join()
        assert signal.getsignal(signal.SIGTERM) is not None
        signal.signal(signal.SIGTERM, previous)
    assert died == [True]
    a.refresh_from_db()
    assert (a.status, a.attempts, a.redeliveries, a.lease_until) == ("queued", 0, 0, None)
    assert a.error.startswith("released: its worker") and "SIGTERM" in a.error
    assert OrmQ.objects.count() == queued_before + 1  # re-enqueued for another worker
    entry = AuditEntry.objects.get(action="workflow.lease_expired", target_id=str(run.pk))
    assert entry.payload["cause"] == "worker_stopped"
    again = execute._claim(a.pk)  # another worker takes it: a full round of attempts is still there
    assert again is not None and (again.attempts, again.max_attempts, again.claims) == (1, 1, 2)


def test_a_step_that_ignores_ctx_stop_is_interrupted_at_its_timeout(alice, django_capture_on_commit_callbacks) -> None:
    import time as _time

    from workflows.steps import CALLABLES

    def stubborn(ctx):  # blocks without looking at ctx.stop: only the SIGUSR2 interrupt ends it
        _time.sleep(60)
        return {"finished": True}

    CALLABLES["stubborn"] = stubborn
    try:
        flow = make_flow("stubborn", [py("a", "stubborn", timeout=1)])
        run = drain(start(alice, flow, capture=django_capture_on_commit_callbacks))
    finally:
        del CALLABLES["stubborn"]
    a = StepRun.objects.get(run=run, name="a")
    assert a.status == "failed" and a.error == "timed out after 1s"
