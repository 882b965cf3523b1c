"""kill -9 of the whole qcluster mid-step: after the lease expires the step is re-claimed by a new
cluster and the run completes; every step completes exactly once and attempts stay within the
maximum."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from tests.conftest import wait_for
from tests.workflows.helpers import make_flow, py, statuses
from workflows import actions, sweeps
from workflows.models import StepRun, WorkflowRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def test_sigkill_mid_step_the_run_still_completes_once(spawn, tmp_path: Path) -> None:
    alice = User.objects.create_superuser("alice", "alice@example.org", "pw-alice-123")
    journal = tmp_path / "journal.txt"
    env = {"HMS_Q_WORKERS": "1", "HMS_STEP_LEASE_SECONDS": "2", "HMS_STEP_JOURNAL": str(journal)}
    flow = make_flow("crashy", [
        py("first", "journal"),
        py("middle", "journal", "first", kwargs={"seconds": 4}, retries=2, timeout=30),
        py("last", "journal", "middle"),
    ])
    first = spawn("qcluster", **env)
    run = actions.start_run(flow, {}, actor=alice).run
    assert run is not None
    wait_for(lambda: StepRun.objects.filter(run=run, name="middle", status="running").exists(), timeout=30,
             message="the middle step to be running")
    first.kill(signal.SIGKILL)  # the whole process group: sentinel, pusher, workers
    first.popen.wait(timeout=10)
    middle = StepRun.objects.get(run=run, name="middle")
    assert middle.status == "running" and middle.attempts == 1  # nobody told the database

    spawn("qcluster", **env)
    # The controller's job, done here directly: once the dead worker's lease lapses, re-queue.
    wait_for(lambda: sweeps.sweep_expired_leases() or StepRun.objects.filter(pk=middle.pk).exclude(
        status="running", attempts=1).exists(), timeout=30, interval=0.2, message="the lease sweep")

    def done() -> bool:
        run.refresh_from_db()
        return run.status not in WorkflowRun.ACTIVE

    wait_for(done, timeout=60, interval=0.2, message="the run to finish after the crash")
    assert run.status == "succeeded", statuses(run)
    lines = journal.read_text().split("\n")[:-1]
    completed = [line.split()[1] for line in lines]
    assert sorted(completed) == ["first", "last", "middle"]  # each step completed exactly once
    middle.refresh_from_db()
    assert middle.attempts == 2 <= middle.max_attempts
    assert f"{run.pk} middle 2" in lines
    assert StepRun.objects.get(run=run, name="first").attempts == 1  # a succeeded step never re-runs
