"""SIGTERM of the worker cluster running a step: the worker hands the step back at once (queued
again, its attempt given back, nothing counted) and the other cluster picks it up in < 2 s, with
no controller sweeping and a lease far longer than that (nothing waits it out)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from audit.models import AuditEntry
from tests.conftest import wait_for
from tests.workflows.helpers import cluster_of, completions, make_flow, py, wait_finished, worker_pid
from workflows import actions
from workflows.models import StepRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(150)]


def test_sigterm_mid_step_hands_the_step_to_the_other_cluster_at_once(spawn, tmp_path: Path) -> None:
    alice = User.objects.create_superuser("alice", "alice@example.org", "pw-alice-123")
    journal = tmp_path / "journal.txt"
    env = {"HMS_Q_WORKERS": "1", "HMS_STEP_LEASE_SECONDS": "60", "HMS_STEP_JOURNAL": str(journal)}
    clusters = [spawn("qcluster", **env), spawn("qcluster", **env)]
    time.sleep(3)  # both clusters up and polling before the step is enqueued
    flow = make_flow("terminated", [py("long", "journal", kwargs={"seconds": 4}, retries=0, timeout=60),
                                    py("after", "journal", "long")])
    run = actions.start_run(flow, {}, actor=alice).run
    assert run is not None
    step = wait_for(lambda: StepRun.objects.filter(run=run, name="long", status="running").first(), timeout=40,
                    interval=0.05, message="the step to be running")
    pid = worker_pid(step.pk)
    holder = cluster_of(pid, clusters)
    assert holder is not None, "the step's worker belongs to neither cluster"
    other = clusters[1 - clusters.index(holder)]
    time.sleep(1)  # mid-step
    holder.kill(signal.SIGTERM)  # the whole group, as a service manager stops a unit
    stopped = time.monotonic()

    def taken_over() -> StepRun | None:
        s = StepRun.objects.get(pk=step.pk)
        return s if s.claims == 2 and s.status == "running" else None

    again = wait_for(taken_over, timeout=10, interval=0.02, message="the other cluster to take the step")
    took = time.monotonic() - stopped
    assert took < 2.0, f"picked up {took:.2f}s after SIGTERM"
    assert cluster_of(worker_pid(again.pk), clusters) is other
    # The stopped worker is gone (it ends by SIGTERM once it has handed its step back). The
    # cluster's main process is django-q2's: it may linger after a group SIGTERM (it does when idle
    # too); Proc.stop() finishes it.
    wait_for(lambda: not _alive(pid), timeout=10, message="the SIGTERMed worker to exit")

    assert wait_finished(run, 60, clusters).status == "succeeded"
    assert sorted(completions(journal)) == ["after", "long"]  # the interrupted run never completed
    step.refresh_from_db()
    assert (step.attempts, step.max_attempts, step.redeliveries, step.claims) == (1, 1, 0, 2)
    released = AuditEntry.objects.get(action="workflow.lease_expired", target_id=str(run.pk))
    assert released.payload["cause"] == "worker_stopped"


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped by its dead sentinel) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
