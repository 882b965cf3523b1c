"""The run quota holds under real concurrency (gunicorn, 4 worker processes, PostgreSQL), and a
slot is given back when a run ends, is cancelled, or its worker dies and the lease expires."""

from __future__ import annotations

import signal
import socket
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import requests
from django.db import connection, transaction

from audit.models import AuditEntry
from policies.enforce import enforce
from tests.conftest import ROOT, Proc, api, as_owner, subprocess_env, wait_for
from workflows import actions, dispatch, sweeps
from workflows.models import StepRun, WorkflowDefinition, WorkflowRun

FLOW = "analyticsReport"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gunicorn(tmp_path: Path):
    port = free_port()
    proc = Proc([sys.executable, "-m", "gunicorn", "hmsmgmt.wsgi:application", "--workers", "4",
                 "--bind", f"127.0.0.1:{port}", "--backlog", "1024", "--timeout", "120",
                 "--graceful-timeout", "5"], subprocess_env(), tmp_path / "gunicorn.log")
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/mgmt/openapi.json", timeout=2).status_code == 200
        except requests.RequestException:
            assert proc.popen.poll() is None, proc.output()
            return False

    try:
        wait_for(up, timeout=60, interval=0.2, message="gunicorn to answer")
        yield base
    finally:
        proc.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.django_db(transaction=True)
def test_200_concurrent_starts_exactly_5_run(personas, demo, tokens, gunicorn: str) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the multi-process quota test needs PostgreSQL (SQLite serialises writers anyway)")
    n, barrier = 200, threading.Barrier(200)
    results: list[tuple[str, int, dict]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        rid = f"quota-burst-{i}"
        barrier.wait(timeout=60)
        try:
            r = requests.post(f"{gunicorn}/mgmt/workflows", json={"flowId": FLOW, "data": {"seconds": 30}},
                              headers={"Authorization": f"Bearer {tokens['carol']}", "X-Request-ID": rid,
                                       "Connection": "close"}, timeout=120)
            body = r.json() if r.headers.get("Content-Type", "").startswith("application/json") else {}
            out = (rid, r.status_code, body)
        except requests.RequestException as exc:
            out = (rid, -1, {"exception": repr(exc)})
        with lock:
            results.append(out)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert len(results) == n
    codes = Counter(code for _, code, _ in results)
    assert codes == {200: 5, 429: 195}, (codes, [r for r in results if r[1] not in (200, 429)][:5])
    refusals = [body for _, code, body in results if code == 429]
    assert all(b["error"] == "policy_violation" and b["limit"] == 5 and b["current"] == 5 for b in refusals)
    carol = personas["carol"]
    assert WorkflowRun.objects.filter(actor=carol, status__in=WorkflowRun.ACTIVE).count() == 5
    # One audit entry per request, in the request's own transaction: 5 started, 195 denied.
    per_request = Counter(AuditEntry.objects.filter(request_id__startswith="quota-burst-")
                          .values_list("request_id", flat=True))
    assert len(per_request) == n and set(per_request.values()) == {1}
    outcomes = Counter(AuditEntry.objects.filter(request_id__startswith="quota-burst-")
                       .values_list("action", "outcome"))
    assert outcomes == {("workflow.start", "success"): 5, ("workflow.start", "denied"): 195}


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
def test_the_quota_lock_makes_count_and_insert_atomic(personas, demo) -> None:
    """Deterministic version of the race the burst above can only hit by chance: A holds the
    transaction that creates carol's 5th run; B, starting a 6th meanwhile, must wait on the quota
    lock and then count A's run (without the lock B would count 4 and start a 6th)."""
    if connection.vendor != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's; SQLite's IMMEDIATE transactions serialise writers")
    carol, flow = personas["carol"], WorkflowDefinition.objects.get(slug=FLOW)
    for _ in range(4):
        assert actions.start_run(flow, {}, actor=carol).decision.allowed
    a_holds, a_may_commit = threading.Event(), threading.Event()
    b_pid: list[int] = []
    outcome: dict[str, object] = {}

    def a() -> None:
        try:
            with transaction.atomic():  # keeps start_run's transaction, and its lock, open
                outcome["a"] = actions.start_run(flow, {}, actor=carol).decision.allowed
                a_holds.set()
                a_may_commit.wait(timeout=30)
        finally:
            connection.close()

    def b() -> None:
        try:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                b_pid.append(cur.fetchone()[0])
            a_holds.wait(timeout=30)
            d = actions.start_run(flow, {}, actor=carol).decision
            outcome["b"] = (d.allowed, d.status, d.current)
        finally:
            connection.close()

    ta, tb = threading.Thread(target=a), threading.Thread(target=b)
    ta.start()
    tb.start()

    seen: list[object] = []

    def b_waits_on_the_lock() -> bool:
        # As the owner: pg_stat_activity hides another role's wait events from the runtime role.
        with as_owner(), connection.cursor() as cur:
            cur.execute("SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s", b_pid[:1] or [0])
            row = cur.fetchone()
        seen.append(row)
        return bool(row) and row[1] == "advisory"

    try:
        wait_for(b_waits_on_the_lock, timeout=30, message="B to wait on the quota lock A holds")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; B's waits seen: {set(seen)}") from None
    finally:
        a_may_commit.set()
        ta.join(timeout=30)
        tb.join(timeout=30)
    assert outcome == {"a": True, "b": (False, 429, 5)}
    assert WorkflowRun.objects.filter(actor=carol, status__in=WorkflowRun.ACTIVE).count() == 5


@pytest.mark.django_db
def test_a_cancelled_or_finished_run_frees_its_slot(personas, demo, tokens, clients) -> None:
    started = [api(clients["anon"], "post", "/mgmt/workflows", {"flowId": FLOW}, tokens["carol"]).json()["runId"]
               for _ in range(5)]
    assert api(clients["anon"], "post", "/mgmt/workflows", {"flowId": FLOW}, tokens["carol"]).status_code == 429
    cancel = api(clients["anon"], "post", f"/mgmt/workflows/{started[0]}/cancel", token=tokens["carol"])
    assert cancel.status_code == 200
    assert api(clients["anon"], "post", "/mgmt/workflows", {"flowId": FLOW}, tokens["carol"]).status_code == 200
    assert api(clients["anon"], "post", "/mgmt/workflows", {"flowId": FLOW}, tokens["carol"]).status_code == 429
    # A run that finishes (every step done) is settled by the engine and frees its slot too.
    StepRun.objects.filter(run_id=started[1]).update(status=StepRun.Status.SUCCEEDED)
    dispatch.settle_run(started[1])
    assert WorkflowRun.objects.get(pk=started[1]).status == WorkflowRun.Status.SUCCEEDED
    assert api(clients["anon"], "post", "/mgmt/workflows", {"flowId": FLOW}, tokens["carol"]).status_code == 200


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.django_db(transaction=True)
def test_a_dead_workers_run_frees_its_slot_when_the_lease_expires(personas, demo, spawn, settings) -> None:
    # No re-delivery after a lost worker (the default re-delivers it, not counting a retry): the
    # step fails at once, which is what frees the slot here.
    settings.HMS_STEP_REDELIVERIES = 0
    carol, flow = personas["carol"], WorkflowDefinition.objects.get(slug=FLOW)
    env = {"HMS_Q_WORKERS": "1", "HMS_STEP_LEASE_SECONDS": "2"}
    cluster = spawn("qcluster", **env)
    runs = [actions.start_run(flow, {"seconds": 30}, actor=carol).run for _ in range(5)]
    assert all(runs)

    def running() -> StepRun | None:
        return StepRun.objects.filter(run__in=runs, status=StepRun.Status.RUNNING).first()

    step = wait_for(running, timeout=60, interval=0.2, message="a worker to pick up a step")
    cluster.kill(signal.SIGKILL)  # the worker dies mid-step: nobody tells the database
    cluster.popen.wait(timeout=10)
    assert not enforce(carol, "run", flow, flow=FLOW, tags=flow.tags).allowed
    # The controller's sweep, called directly: once the dead worker's lease lapses, the step fails
    # (analyticsReport has no retries), the run fails, and the slot is free.
    wait_for(lambda: sweeps.sweep_expired_leases() or StepRun.objects.filter(
        pk=step.pk, status=StepRun.Status.FAILED).exists(), timeout=60, interval=0.3, message="the lease sweep")
    wait_for(lambda: WorkflowRun.objects.get(pk=step.run_id).status == WorkflowRun.Status.FAILED, timeout=30,
             message="the run to fail")
    d = enforce(carol, "run", flow, flow=FLOW, tags=flow.tags)
    assert d.allowed, d.detail
    assert AuditEntry.objects.filter(action="workflow.lease_expired", target_id=str(step.run_id)).count() == 1
    assert (ROOT / "manage.py").exists()


@pytest.mark.django_db
def test_retrying_a_run_cannot_exceed_the_quota(personas, demo, tokens, clients) -> None:
    """A retried run becomes active again, so it takes a slot like a start does."""
    first = api(clients["anon"], "post", "/mgmt/workflows", {"flowId": FLOW}, tokens["carol"]).json()["runId"]
    assert api(clients["anon"], "post", f"/mgmt/workflows/{first}/cancel", token=tokens["carol"]).status_code == 200
    for _ in range(5):
        assert api(clients["anon"], "post", "/mgmt/workflows", {"flowId": FLOW}, tokens["carol"]).status_code == 200
    retry = api(clients["anon"], "post", f"/mgmt/workflows/{first}/retry", token=tokens["carol"])
    assert retry.status_code == 429
    assert WorkflowRun.objects.filter(actor=personas["carol"], status__in=WorkflowRun.ACTIVE).count() == 5
