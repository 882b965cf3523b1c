"""kill -9 of a worker mid-step (the qcluster's worker process, or the whole cluster) on a step with
`retries: 0`: the controller's sweep re-delivers the step once its lease lapses (within lease + a
tick), without spending a retry; the run succeeds and the step's action completed exactly once
(counted by the journal callable's side effect)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from tests.conftest import wait_for
from tests.workflows.helpers import completions, make_flow, py, wait_finished, worker_pid
from workflows import actions
from workflows.models import StepRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(150)]
LEASE = 2
# The target is lease + 1 s (the lease lapses at most LEASE after the kill; the sweep runs every
# 0.5 s tick). The slack is for this shared 2-core machine; bench_redelivery.py prints the figures.
SLACK = 1.0


@pytest.mark.parametrize("victim", ["worker", "cluster"])
def test_sigkill_mid_step_redelivers_without_a_retry_and_the_step_runs_once(victim, spawn, tmp_path: Path) -> None:
    alice = User.objects.create_superuser("alice", "alice@example.org", "pw-alice-123")
    journal = tmp_path / "journal.txt"
    env = {"HMS_Q_WORKERS": "1", "HMS_STEP_LEASE_SECONDS": str(LEASE), "HMS_STEP_JOURNAL": str(journal)}
    flow = make_flow("crashy", [
        py("first", "journal"),
        py("middle", "journal", "first", kwargs={"seconds": 4}, retries=0, timeout=30),
        py("last", "journal", "middle"),
    ])
    spawn("controller", "--loops", "tick", **env)
    first = spawn("qcluster", **env)
    run = actions.start_run(flow, {}, actor=alice).run
    assert run is not None
    middle = wait_for(lambda: StepRun.objects.filter(run=run, name="middle", status="running").first(), timeout=40,
                      interval=0.05, message="the middle step to be running")
    pid = worker_pid(middle.pk)
    assert pid is not None and os.getpgid(pid) == first.pid
    time.sleep(0.5)  # mid-step, past its first heartbeats
    if victim == "worker":
        os.kill(pid, signal.SIGKILL)  # the sentinel reincarnates the worker; nobody tells the database
    else:
        first.kill(signal.SIGKILL)  # the whole process group: sentinel, pusher, monitor, worker
        first.popen.wait(timeout=10)
    killed = time.monotonic()
    if victim == "cluster":
        spawn("qcluster", **env)  # a node to take the step over once it is re-delivered

    redelivered = wait_for(lambda: StepRun.objects.filter(pk=middle.pk, redeliveries=1).first(), timeout=30,
                           interval=0.05, message="the sweep to re-deliver the step")
    took = time.monotonic() - killed
    assert redelivered.error.startswith("worker lost: its lease expired") or redelivered.status != "queued"
    assert took <= LEASE + 1 + SLACK, f"re-delivered {took:.2f}s after the kill (lease {LEASE}s)"

    assert wait_finished(run, 60).status == "succeeded"
    assert sorted(completions(journal)) == ["first", "last", "middle"]  # each step completed exactly once
    middle.refresh_from_db()
    assert (middle.status, middle.attempts, middle.max_attempts, middle.redeliveries) == ("succeeded", 1, 1, 1)
    assert middle.claims == 2 and worker_pid(middle.pk) != pid
    assert StepRun.objects.get(run=run, name="first").attempts == 1  # a succeeded step never re-runs
