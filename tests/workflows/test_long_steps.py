"""Long steps (issue 16): a step runs as long as its own `timeout` says, past django-q2's task
timeout (HMS_Q_TIMEOUT), in a real qcluster, without being cut and without a re-delivery while its
worker heartbeats.

The fast variant shrinks the cluster's timeout to 5 s and runs a 12 s step; the issue's own case
(`analyticsReport` with seconds: 400 under the default 300 s timeout) takes 400 s: HMS_LONG_STEP_SECONDS
sets its length (default 400)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from audit import events
from audit.models import AuditEntry
from tests.conftest import ROOT, Proc, subprocess_env, wait_for
from tests.workflows.helpers import make_flow, step
from workflows import actions
from workflows.models import StepRun, WorkflowDefinition, WorkflowRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def start_cluster(tmp_path: Path, **env: str) -> list[Proc]:
    # django-q2 logs each delivery at INFO ("Worker-1 processing step-7 '...'"): the test counts them.
    full = subprocess_env(HMS_Q_WORKERS="2", HMS_STEP_LEASE_SECONDS="3", HMS_CONTROLLER_TICK_MS="200",
                          HMS_Q_LOG_LEVEL="INFO", **env)
    return [Proc([sys.executable, str(ROOT / "manage.py"), cmd], full, tmp_path / f"{cmd}.log")
            for cmd in ("qcluster", "controller")]


def finished(run: WorkflowRun, procs: list[Proc], timeout: float) -> WorkflowRun:
    def done() -> bool:
        run.refresh_from_db()
        return run.status not in WorkflowRun.ACTIVE
    try:
        wait_for(done, timeout=timeout, interval=0.2, message=f"run {run.pk} to finish")
    except AssertionError:
        raise AssertionError("\n".join(p.output()[-3000:] for p in procs)) from None
    return run


def assert_ran_once(run: WorkflowRun, name: str, procs: list[Proc]) -> StepRun:
    s = StepRun.objects.get(run=run, name=name)
    logs = "\n".join(p.output() for p in procs)
    assert run.status == "succeeded", f"{s.status}: {s.error}\n{logs[-3000:]}"
    # One claim, one attempt, no lost-worker re-delivery, nothing swept.
    assert (s.attempts, s.claims, s.redeliveries) == (1, 1, 0), (s.attempts, s.claims, s.redeliveries)
    assert not AuditEntry.objects.filter(action=events.WORKFLOW_LEASE_EXPIRED, target_id=str(run.pk)).exists()
    assert "reincarnated worker" not in logs and "exceeded maximum timeout" not in logs
    return s


@pytest.mark.timeout(120)
def test_a_step_longer_than_the_task_timeout_runs_to_its_end(tmp_path) -> None:
    alice = User.objects.create_superuser("alice", "alice@example.org", "pw-alice-123")
    flow = make_flow("longfast", [step("a", action="sleep", params={"seconds": 12}, timeout=30),
                                  step("b", "a", action="sleep", params={"seconds": 7}, timeout=20)])
    procs = start_cluster(tmp_path, HMS_Q_TIMEOUT="5", HMS_Q_RETRY="6")
    try:
        run = actions.start_run(flow, {}, actor=alice).run
        assert run is not None
        run = finished(run, procs, timeout=90)
        a = assert_ran_once(run, "a", procs)
        b = assert_ran_once(run, "b", procs)
        assert a.output == {"slept": 12} and b.output == {"slept": 7}
        assert (a.finished_at - a.started_at).total_seconds() >= 12
        # The broker did not hand the tasks out again after the cluster's 6 s lock (HMS_Q_RETRY):
        # a (a root, enqueued by id) was delivered twice: the first delivery sent it on with a
        # timeout of its own, which ran it; b (queued by a's success, its length known) once.
        logs = "\n".join(p.output() for p in procs)
        assert len(re.findall(rf"processing step-{a.pk} ", logs)) == 2, logs[-3000:]
        assert len(re.findall(rf"processing step-{b.pk} ", logs)) == 1, logs[-3000:]
    finally:
        for p in procs:
            p.stop()


@pytest.mark.slow  # 400 s of wall time: the PostgreSQL pass runs it, the SQLite pass the fast variant
@pytest.mark.timeout(int(os.environ.get("HMS_LONG_STEP_SECONDS", "400")) + 180)
def test_analytics_report_of_400_seconds_succeeds(tmp_path, demo) -> None:
    """The issue's "done when": the demo's analyticsReport (timeout 3600 s) with seconds: 400 under
    the default HMS_Q_TIMEOUT of 300 s. Today it is cut at 295 s."""
    seconds = int(os.environ.get("HMS_LONG_STEP_SECONDS", "400"))
    alice = User.objects.create_superuser("alice", "alice@example.org", "pw-alice-123")
    procs = start_cluster(tmp_path)  # the default django-q2 timeout (300 s) and retry (360 s)
    try:
        run = actions.start_run(WorkflowDefinition.objects.get(slug="analyticsReport"), {"seconds": seconds},
                                actor=alice).run
        assert run is not None
        run = finished(run, procs, timeout=seconds + 120)
        crunch = assert_ran_once(run, "crunch", procs)
        assert crunch.output == {"slept": seconds}
    finally:
        for p in procs:
            p.stop()
