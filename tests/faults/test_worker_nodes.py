"""Worker nodes: three `qcluster` processes on the Redis broker share a run's steps; kill -9 of one
mid-step and the run completes on the others, every step's action completing exactly once.

Needs the `redis` client and a Redis server: HMS_TEST_REDIS_URL (default
redis://127.0.0.1:6379/7, a database of its own: the test flushes only that one). Skipped with
the reason printed when either is missing."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from tests.conftest import wait_for
from tests.workflows.helpers import cluster_of, completions, make_flow, py, wait_finished, worker_pid
from workflows import actions
from workflows.models import StepRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]
REDIS_URL = os.environ.get("HMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")
BRANCHES = 4


@pytest.fixture
def redis_broker(monkeypatch):  # type: ignore[no-untyped-def]
    """This process enqueues on Redis too (start_run's roots), as the nodes and the controller do."""
    try:
        import redis
    except ImportError:
        print("redis client not installed")
        pytest.skip("the redis client is not installed (pip install redis)")
    client = redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"no Redis at {REDIS_URL}: {exc}")
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    client.flushdb()  # our own database number only
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "BROKER_CLASS", None)
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", REDIS_URL)
    yield client
    client.flushdb()
    client.close()


def test_kill_9_of_one_node_mid_step_the_run_completes_on_the_others(redis_broker, spawn, tmp_path: Path) -> None:
    alice = User.objects.create_superuser("alice", "alice@example.org", "pw-alice-123")
    journal = tmp_path / "journal.txt"
    env = {"HMS_REDIS_URL": REDIS_URL, "HMS_Q_WORKERS": "1", "HMS_STEP_LEASE_SECONDS": "2",
           "HMS_STEP_JOURNAL": str(journal)}
    spawn("controller", "--loops", "tick", **env)
    nodes = [spawn("qcluster", **env) for _ in range(3)]
    time.sleep(3)  # every node up and waiting on the list before the run starts
    branches = [py(f"b{i}", "journal", "root", kwargs={"seconds": 3}, retries=0, timeout=30)
                for i in range(BRANCHES)]
    flow = make_flow("spread", [py("root", "journal"), *branches,
                                py("join", "journal", *[b["name"] for b in branches])])
    run = actions.start_run(flow, {}, actor=alice).run
    assert run is not None
    running = wait_for(lambda: StepRun.objects.filter(run=run, name__startswith="b", status="running").first(),
                       timeout=40, interval=0.05, message="a branch to be running")
    time.sleep(0.5)
    victim = cluster_of(worker_pid(running.pk), nodes)
    assert victim is not None
    victim.kill(signal.SIGKILL)
    victim.popen.wait(timeout=10)
    survivors = [n for n in nodes if n is not victim]

    assert wait_finished(run, 90, nodes).status == "succeeded"
    done = completions(journal)
    assert sorted(done) == sorted(["root", "join", *[f"b{i}" for i in range(BRANCHES)]])  # each exactly once
    steps = {s.name: s for s in StepRun.objects.filter(run=run)}
    lost = steps[running.name]
    assert lost.redeliveries == 1 and lost.attempts == 1 and lost.max_attempts == 1
    assert cluster_of(worker_pid(lost.pk), nodes) in survivors  # finished on another node
    # The nodes shared the work: the branches' last claims belong to more than one node.
    holders = {cluster_of(worker_pid(s.pk), nodes) for s in steps.values() if s.name.startswith("b")}
    assert len(holders - {None}) >= 2
