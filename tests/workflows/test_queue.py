"""Quotas that queue: a start beyond a "when full: queue" quota answers 202 with its place in line,
waits FIFO per scope, and starts when a slot frees (from the transition that frees it, and from
the controller's sweep); a queued run can be cancelled; the queue has a bound."""

from __future__ import annotations

import re

import pytest

from audit.models import AuditEntry
from policies import actions as policy_actions
from policies.models import Policy
from tests.conftest import api
from workflows import actions, dispatch, queue
from workflows.models import StepRun, WorkflowDefinition, WorkflowRun

pytestmark = pytest.mark.django_db
FLOW = "analyticsReport"
POLICY = "analytics jobs per user ≤ 5"


@pytest.fixture
def queueing(demo) -> Policy:
    policy = Policy.objects.get(name=POLICY)
    policy.when_full = Policy.WhenFull.QUEUE
    policy_actions.save_policy(policy, actor="system:test")
    return policy


def start(clients, tokens, who: str = "carol", data: dict | None = None):
    return api(clients["anon"], "post", "/mgmt/workflows", {"flowId": FLOW, "data": data or {}}, tokens[who])


def finish(run_id: int) -> None:
    """The run's steps succeed and the engine settles it (as a worker finishing its last step)."""
    StepRun.objects.filter(run_id=run_id).update(status=StepRun.Status.SUCCEEDED)
    dispatch.settle_run(run_id)


def test_beyond_the_limit_a_start_is_queued_with_its_place(clients, tokens, queueing, personas) -> None:
    started = [start(clients, tokens) for _ in range(5)]
    assert [r.status_code for r in started] == [200] * 5
    assert all(r.json() == {"runId": r.json()["runId"], "status": "started"} for r in started)  # the chapter's
    first, second = start(clients, tokens), start(clients, tokens)
    assert (first.status_code, second.status_code) == (202, 202)
    body = second.json()
    assert body["status"] == "queued" and body["position"] == 2 and first.json()["position"] == 1
    assert body["policy"] == {"name": POLICY, "limit": 5, "current": 5, "perUser": True,
                              "detail": "5 of 5 analytics runs already active for carol; 1 queued ahead."}
    run = WorkflowRun.objects.get(pk=body["runId"])
    assert run.status == "queued" and run.queue_key == f"{queueing.pk}:{personas['carol'].pk}"
    # Nothing of it has been handed to the workers: its steps wait with the run.
    assert list(run.steps.values_list("status", flat=True)) == ["pending"]
    got = api(clients["carol"], "get", f"/mgmt/workflows/{run.pk}").json()
    assert got["status"] == "queued" and got["position"] == 2
    assert got["queue"] == f"2nd in line behind carol's run {first.json()['runId']} ({POLICY}: 5 running)"
    listed = api(clients["carol"], "get", "/mgmt/workflows?status=queued").json()["items"]
    assert [(i["runId"], i["position"]) for i in listed] == [(run.pk, 2), (first.json()["runId"], 1)]
    # Another user's scope is their own: bob's first run starts although carol's queue is long.
    assert start(clients, tokens, "bob").status_code == 200
    assert AuditEntry.objects.filter(action="workflow.queued").count() == 2
    entry = AuditEntry.objects.filter(action="workflow.queued", target_id=str(run.pk)).get()
    assert entry.actor == "carol" and entry.payload["position"] == 2 and entry.outcome == "success"


def test_a_freed_slot_goes_to_the_head_of_the_queue_in_order(clients, tokens, queueing, personas,
                                                             django_capture_on_commit_callbacks) -> None:
    running = [start(clients, tokens).json()["runId"] for _ in range(5)]
    waiting = [start(clients, tokens).json()["runId"] for _ in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        finish(running[0])  # the transition that frees the slot starts the head (after commit)
    assert WorkflowRun.objects.get(pk=waiting[0]).status == "pending"
    assert list(StepRun.objects.filter(run_id=waiting[0]).values_list("status", flat=True)) == ["queued"]
    assert [WorkflowRun.objects.get(pk=pk).status for pk in waiting[1:]] == ["queued", "queued"]
    assert queue.place(WorkflowRun.objects.get(pk=waiting[2])).position == 2
    # A newcomer never jumps the line, even at a moment when a slot is free: it queues behind.
    WorkflowRun.objects.filter(pk=running[1]).update(status="succeeded")  # a slot free, nobody told
    late = start(clients, tokens)
    assert late.status_code == 202 and late.json()["position"] == 3
    # The controller's sweep (safety net) starts the head within its next pass.
    assert queue.promote_all() == [waiting[1]]
    assert WorkflowRun.objects.filter(actor=personas["carol"], status__in=WorkflowRun.ACTIVE).count() == 5
    assert queue.promote_all() == []  # full again: nothing more starts
    # Cancelling a running run frees its slot as well.
    with django_capture_on_commit_callbacks(execute=True):
        assert api(clients["anon"], "post", f"/mgmt/workflows/{running[2]}/cancel",
                   token=tokens["carol"]).status_code == 200
    assert WorkflowRun.objects.get(pk=waiting[2]).status == "pending"
    dequeued = list(AuditEntry.objects.filter(action="workflow.dequeued").order_by("id")
                    .values_list("target_id", flat=True))
    assert dequeued == [str(pk) for pk in waiting]
    assert WorkflowRun.objects.get(pk=late.json()["runId"]).status == "queued"


def test_a_queued_run_can_be_cancelled_and_holds_no_slot(clients, tokens, queueing, personas,
                                                         django_capture_on_commit_callbacks) -> None:
    for _ in range(5):
        start(clients, tokens)
    a, b = start(clients, tokens).json()["runId"], start(clients, tokens).json()["runId"]
    with django_capture_on_commit_callbacks(execute=True):
        resp = api(clients["anon"], "post", f"/mgmt/workflows/{a}/cancel", token=tokens["carol"])
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert list(StepRun.objects.filter(run_id=a).values_list("status", flat=True)) == ["cancelled"]
    # Still five running (the cancelled one held no slot, so nothing started in its place) …
    assert WorkflowRun.objects.filter(actor=personas["carol"], status__in=WorkflowRun.ACTIVE).count() == 5
    assert WorkflowRun.objects.get(pk=b).status == "queued"
    assert queue.place(WorkflowRun.objects.get(pk=b)).position == 1  # … and b moved up
    entry = AuditEntry.objects.filter(action="workflow.cancel", target_id=str(a)).get()
    assert entry.payload["queued"] is True


def test_past_the_queue_bound_starts_are_refused(clients, tokens, queueing, settings) -> None:
    settings.HMS_RUN_QUEUE_MAX = 2
    for _ in range(5):
        start(clients, tokens)
    assert [start(clients, tokens).status_code for _ in range(2)] == [202, 202]
    refused = start(clients, tokens)
    assert refused.status_code == 429
    body = refused.json()
    assert body["error"] == "policy_violation" and body["policy"] == POLICY
    assert "queue is full (2 waiting; HMS_RUN_QUEUE_MAX=2)" in body["detail"]
    assert WorkflowRun.objects.filter(status="queued").count() == 2
    assert AuditEntry.objects.filter(action="workflow.start", outcome="denied").count() == 1


def test_a_refusing_quota_still_refuses(clients, tokens, demo) -> None:
    for _ in range(5):
        assert start(clients, tokens).status_code == 200
    refused = start(clients, tokens)
    assert refused.status_code == 429 and "queueable" not in refused.json()
    assert not WorkflowRun.objects.filter(status="queued").exists()


def test_dry_run_says_a_start_would_queue(clients, tokens, queueing) -> None:
    for _ in range(5):
        start(clients, tokens)
    resp = api(clients["anon"], "post", "/mgmt/workflows?dry_run=1", {"flowId": FLOW}, tokens["carol"])
    assert resp.status_code == 200 and resp.json()["allowed"] is False
    assert WorkflowRun.objects.count() == 5


def test_a_change_freeze_refuses_rather_than_queues(clients, tokens, queueing) -> None:
    from datetime import timedelta

    from django.utils import timezone

    for _ in range(5):
        start(clients, tokens)
    now = timezone.now()
    freeze = Policy(name="freeze", kind=Policy.Kind.CHANGE_FREEZE, freeze_start=now - timedelta(hours=1),
                    freeze_end=now + timedelta(hours=1), applies_to=Policy.Applies.RUNS)
    policy_actions.save_policy(freeze, actor="system:test")
    assert start(clients, tokens).status_code == 409
    assert not WorkflowRun.objects.filter(status="queued").exists()


def test_the_run_page_and_the_runs_list_say_the_place_in_words(clients, tokens, queueing) -> None:
    ids = [start(clients, tokens).json()["runId"] for _ in range(5)]
    q1, q2, q3 = (start(clients, tokens).json()["runId"] for _ in range(3))
    page = clients["carol"].get(f"/runs/{q3}/").content.decode()
    words = f"3rd in line behind carol&#x27;s runs {q1}, {q2} ({POLICY}: 5 running)"
    assert words in page
    assert 'id="run-queue" data-position="3"' in page
    assert 'hx-trigger="every 1s' in page  # a queued run's page polls: its place counts down
    listing = clients["carol"].get("/runs/").content.decode()
    assert re.search(rf'data-run="{q1}" data-position="1">1st in line \({re.escape(POLICY)}: 5 running\)', listing)
    assert 'hx-trigger="every 2s"' in listing  # the list polls while a run on it waits
    # Once nothing waits, the list stops polling.
    for pk in (q1, q2, q3):
        actions.cancel_run(WorkflowRun.objects.get(pk=pk), actor="system:test")
    assert 'hx-trigger="every 2s"' not in clients["carol"].get("/runs/").content.decode()
    assert ids


def test_a_queued_launch_from_the_page_says_so(clients, tokens, queueing) -> None:
    for _ in range(5):
        start(clients, tokens)
    resp = clients["carol"].post("/runs/launch/", {"flowId": FLOW, "data": "{}"}, follow=True)
    assert resp.status_code == 200
    run = WorkflowRun.objects.order_by("-id").first()
    assert run.status == "queued"
    assert f"Run {run.pk} of {FLOW} is queued (1st in line)" in resp.content.decode()


def test_the_policy_admin_offers_when_full(clients, queueing) -> None:
    page = clients["alice"].get(f"/admin/policies/policy/{queueing.pk}/change/").content.decode()
    assert 'name="when_full"' in page and "Queue the run (202)" in page
    assert "queues when full" in clients["alice"].get("/admin/policies/policy/").content.decode()


def test_openapi_documents_the_202(clients) -> None:
    spec = clients["anon"].get("/mgmt/openapi.json").json()
    op = spec["paths"]["/mgmt/workflows"]["post"]
    assert "202" in op["responses"]
    assert op["responses"]["202"]["content"]["application/json"]["example"]["status"] == "queued"
    schema = op["responses"]["202"]["content"]["application/json"]["schema"]
    assert schema  # QueuedOut (a $ref)


def test_ordinals() -> None:
    assert [queue.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"]


def test_a_flow_without_a_queueing_quota_never_asks_for_queues(clients, tokens, demo,
                                                               django_assert_num_queries, personas) -> None:
    """The start path of a flow no queueing quota covers is what it was: the queue provider is
    never called (no extra query)."""
    from policies import enforce

    calls: list[str] = []
    real = enforce._providers["queued_runs"]
    enforce.register_provider("queued_runs", lambda **kw: calls.append(kw["key"]) or real(**kw))
    try:
        flow = WorkflowDefinition.objects.get(slug="reportingFlow")
        assert actions.start_run(flow, {}, actor=personas["carol"]).run is not None
        assert start(clients, tokens).status_code == 200  # a refusing quota covers it: no queue query
        assert calls == []
    finally:
        enforce.register_provider("queued_runs", real)
