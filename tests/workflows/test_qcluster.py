"""Runs across real processes: a `manage.py qcluster` (2 workers) and a `manage.py controller`
(lease sweeps, retry backoff) against the test database. One cluster serves the module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.conftest import ROOT, Proc, api, subprocess_env, wait_for
from tests.workflows.helpers import make_flow, py, statuses, step
from workflows import actions
from workflows.models import StepRun, WorkflowRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def cluster(django_db_setup: None, django_db_blocker, tmp_path_factory) -> Iterator[list[Proc]]:
    logs: Path = tmp_path_factory.mktemp("qcluster")
    with django_db_blocker.unblock():
        env = subprocess_env(HMS_Q_WORKERS="2", HMS_STEP_LEASE_SECONDS="3", HMS_CONTROLLER_TICK_MS="200")
    procs = [Proc([sys.executable, str(ROOT / "manage.py"), cmd], env, logs / f"{cmd}.log")
             for cmd in ("qcluster", "controller")]
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture
def alice(transactional_db: None) -> User:
    return User.objects.create_superuser("alice", "alice@example.org", "pw-alice-123")


def launch(alice: User, slug: str, steps: list[dict], data: dict | None = None) -> WorkflowRun:
    outcome = actions.start_run(make_flow(slug, steps), data or {}, actor=alice)
    assert outcome.run is not None
    return outcome.run


def finished(run: WorkflowRun, cluster: list[Proc], timeout: float = 40) -> WorkflowRun:
    def done() -> bool:
        run.refresh_from_db()
        return run.status not in WorkflowRun.ACTIVE
    try:
        wait_for(done, timeout=timeout, interval=0.1, message=f"run {run.pk} to finish")
    except AssertionError:
        raise AssertionError(f"{statuses(run)}\n" + "\n".join(p.output()[-3000:] for p in cluster)) from None
    return run


def test_parallel_branches_overlap_and_fan_in(cluster, alice) -> None:
    run = launch(alice, "fan", [
        step("a"),
        step("b", "a", action="sleep", params={"seconds": 1}),
        step("c", "a", action="sleep", params={"seconds": 1}),
        step("d", "b", "c"),
    ])
    assert finished(run, cluster).status == "succeeded"
    s = {x.name: x for x in StepRun.objects.filter(run=run)}
    assert s["b"].started_at < s["c"].finished_at and s["c"].started_at < s["b"].finished_at  # ran at once
    assert s["d"].started_at >= max(s["b"].finished_at, s["c"].finished_at)


def test_retries_then_success(cluster, alice) -> None:
    run = launch(alice, "flaky", [py("a", "flaky", kwargs={"fail_attempts": 2}, retries=3, backoff=0.2),
                                  step("b", "a")])
    assert finished(run, cluster).status == "succeeded"
    a = StepRun.objects.get(run=run, name="a")
    assert a.attempts == 3 and a.output == {"attempt": 3}


def test_retries_exhausted_fail_the_run_and_dependents_never_start(cluster, alice) -> None:
    run = launch(alice, "doomed", [py("a", "fail", retries=2, backoff=0.1), step("b", "a"), step("c", "b")])
    assert finished(run, cluster).status == "failed"
    assert statuses(run) == {"a": "failed", "b": "skipped", "c": "skipped"}
    assert StepRun.objects.get(run=run, name="a").attempts == 3
    assert not StepRun.objects.filter(run=run, name__in=["b", "c"], started_at__isnull=False).exists()


def test_a_step_over_its_timeout_fails(cluster, alice) -> None:
    run = launch(alice, "slow", [step("a", action="sleep", params={"seconds": 60}, timeout=1), step("b", "a")])
    assert finished(run, cluster).status == "failed"
    assert StepRun.objects.get(run=run, name="a").error == "timed out after 1s"


def test_cancel_tells_the_running_step_to_stop(cluster, alice) -> None:
    run = launch(alice, "long", [step("a", action="sleep", params={"seconds": 90}, timeout=120), step("b", "a")])
    a = StepRun.objects.get(run=run, name="a")
    wait_for(lambda: StepRun.objects.filter(pk=a.pk, status="running").exists(), timeout=20, message="a running")
    assert actions.cancel_run(run, actor=alice)
    # The worker notices within a heartbeat, interrupts the sleep and says so on the step.
    wait_for(lambda: StepRun.objects.filter(pk=a.pk, error__startswith="stopped").exists(), timeout=20,
             message="the worker to stop the cancelled step")
    a.refresh_from_db()
    assert a.error == "stopped: the run was cancelled while this step was running" and a.attempts == 1
    assert statuses(run) == {"a": "cancelled", "b": "cancelled"}


def test_approval_waits_for_a_person_then_runs_on(cluster, alice) -> None:
    run = launch(alice, "gated", [step("prep"), step("gate", "prep", action="approval", params={"prompt": "Go?"},
                                       allow_self_approval=True),
                                  step("after", "gate")])
    wait_for(lambda: statuses(run)["gate"] == "waiting", timeout=20, message="the approval to wait")
    run.refresh_from_db()
    assert run.status == "running" and statuses(run)["after"] == "pending"
    client = Client()
    client.force_login(alice)
    resp = api(client, "POST", f"/mgmt/workflows/{run.pk}/steps/gate/approve", {"approve": True})
    assert resp.status_code == 200, resp.content
    assert finished(run, cluster).status == "succeeded"
    assert StepRun.objects.get(run=run, name="gate").output["approved"] is True
