"""A queueing quota under a burst: 500 concurrent starts through a real gunicorn (4 worker
processes; on PostgreSQL the quota's advisory lock per scope, on SQLite its IMMEDIATE transactions)
→ exactly the limit running, every other run queued with places 1..495 in the order the quota lock
admitted them; then, as runs finish, the queued ones start strictly in that order, none lost, none
started twice."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import requests

from audit.models import AuditEntry
from policies import actions as policy_actions
from policies.models import Policy
from tests.policies.test_quota_concurrency import gunicorn  # noqa: F401  (the fixture)
from workflows import dispatch
from workflows.models import StepRun, WorkflowRun

FLOW = "analyticsReport"
N = 500
LIMIT = 5


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.django_db(transaction=True)
def test_500_concurrent_starts_queue_in_order_and_all_start(personas, demo, tokens, gunicorn: str) -> None:  # noqa: F811
    policy = Policy.objects.get(kind=Policy.Kind.CONCURRENT_RUNS)
    policy.when_full = Policy.WhenFull.QUEUE
    policy_actions.save_policy(policy, actor="system:test")
    barrier = threading.Barrier(N)
    results: list[tuple[int, int, dict]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        barrier.wait(timeout=60)
        try:
            r = requests.post(f"{gunicorn}/mgmt/workflows", json={"flowId": FLOW, "data": {"i": i}},
                              headers={"Authorization": f"Bearer {tokens['carol']}", "X-Request-ID": f"qburst-{i}",
                                       "Connection": "close"}, timeout=300)
            out = (i, r.status_code, r.json() if r.headers.get("Content-Type", "").startswith("application/json")
                   else {"text": r.text[:200]})
        except requests.RequestException as exc:
            out = (i, -1, {"exception": repr(exc)})
        with lock:
            results.append(out)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(N)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    print(f"burst: {N} starts answered in {time.monotonic() - t0:.1f} s")
    assert len(results) == N
    codes = Counter(code for _, code, _ in results)
    assert codes == {200: LIMIT, 202: N - LIMIT}, (codes, [r for r in results if r[1] not in (200, 202)][:5])
    carol = personas["carol"]
    assert WorkflowRun.objects.filter(actor=carol, status__in=WorkflowRun.ACTIVE).count() == LIMIT
    assert WorkflowRun.objects.filter(actor=carol, status="queued").count() == N - LIMIT
    # Places 1..495, each once, in the order of the run ids (ids are taken under the quota lock:
    # the order the lock admitted the requests, which is the order they were submitted in).
    queued = sorted((body["runId"], body["position"]) for _, code, body in results if code == 202)
    assert [pos for _, pos in queued] == list(range(1, N - LIMIT + 1))
    # Every request's data reached its own run (nothing lost or swapped).
    by_run = {body["runId"]: i for i, code, body in results if code in (200, 202)}
    assert len(by_run) == N
    assert all(WorkflowRun.objects.get(pk=pk).data == {"i": i} for pk, i in list(by_run.items())[:50])
    per_request = Counter(AuditEntry.objects.filter(request_id__startswith="qburst-")
                          .values_list("action", "outcome"))
    assert per_request == {("workflow.start", "success"): LIMIT, ("workflow.queued", "success"): N - LIMIT}

    # Runs finish, one at a time: each finish starts the head of the queue (after its commit), so
    # the limit stays full and the queue drains strictly in order.
    order = [pk for pk, _ in queued]
    finished = 0
    t0 = time.monotonic()
    while True:
        active = list(WorkflowRun.objects.filter(actor=carol, status__in=WorkflowRun.ACTIVE)
                      .order_by("pk").values_list("pk", flat=True))
        assert len(active) == min(LIMIT, N - finished), finished
        if not active:
            break
        StepRun.objects.filter(run_id=active[0]).update(status=StepRun.Status.SUCCEEDED)
        dispatch.settle_run(active[0])
        finished += 1
    assert finished == N
    print(f"drain: {N} finishes, each starting the next queued run, in {time.monotonic() - t0:.1f} s")
    started = list(WorkflowRun.objects.filter(pk__in=order, dequeued_at__isnull=False)
                   .order_by("dequeued_at", "pk").values_list("pk", flat=True))
    assert started == order  # FIFO, every one of them
    assert WorkflowRun.objects.filter(actor=carol, status="succeeded").count() == N
    dequeued = list(AuditEntry.objects.filter(action="workflow.dequeued").order_by("id")
                    .values_list("target_id", flat=True))
    assert dequeued == [str(pk) for pk in order]
