"""A real browser watches a queued analytics run's page: its place in line counts down (2nd, 1st)
as the runs ahead of it finish on a real qcluster's workers, then it starts by itself and
succeeds, all swapped in by htmx polling (no reload). No controller runs: the slot is handed on
by the worker that finished the run holding it."""

from __future__ import annotations

import pytest

from policies import actions as policy_actions
from policies.models import Policy
from tests.conftest import wait_for
from tests.e2e.conftest import login
from workflows import actions
from workflows.models import StepRun, WorkflowDefinition, WorkflowRun

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True),
              pytest.mark.timeout(180)]


def test_a_queued_runs_place_counts_down_and_it_starts_by_itself(live_server, page, personas, demo, spawn) -> None:
    policy = Policy.objects.get(kind=Policy.Kind.CONCURRENT_RUNS)
    policy.when_full, policy.limit = Policy.WhenFull.QUEUE, 2
    policy_actions.save_policy(policy, actor="system:test")
    alice, flow = personas["alice"], WorkflowDefinition.objects.get(slug="analyticsReport")
    # Two run (4 s and 12 s); two wait: the 3rd starts when the 4 s one ends, the 4th when the 12 s one does.
    r1, r2, r3, r4 = (actions.start_run(flow, {"seconds": s}, actor=alice) for s in (4, 12, 10, 1))
    assert (r1.queued, r2.queued, r3.queued, r4.queued) == (False, False, True, True)
    assert (r3.position, r4.position) == (1, 2)
    cluster = spawn("qcluster", HMS_Q_WORKERS="3")

    login(page, live_server, "alice", "pw-alice-123")
    page.goto(f"{live_server.url}/runs/{r4.run.pk}/")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloaded instead of swapping
    place = page.locator("#run-queue")
    assert place.get_attribute("data-position") == "2"
    assert (f"2nd in line behind alice's run {r3.run.pk} (analytics jobs per user ≤ 5: 2 running)"
            in place.inner_text())
    try:
        page.wait_for_selector('#run-queue[data-position="1"]', timeout=60_000)
        assert "1st in line (analytics jobs per user ≤ 5: 2 running)" in page.locator("#run-queue").inner_text()
        assert WorkflowRun.objects.get(pk=r1.run.pk).status == "succeeded"
        assert WorkflowRun.objects.get(pk=r3.run.pk).status in WorkflowRun.ACTIVE
        page.wait_for_selector("#run[data-status=succeeded]", timeout=60_000)
    except Exception:
        runs = list(WorkflowRun.objects.values_list("pk", "status", "dequeued_at"))
        steps = list(StepRun.objects.values_list("run_id", "status", "error"))
        raise AssertionError(f"{runs}\n{steps}\n{cluster.output()[-3000:]}") from None
    assert page.locator("#run-queue").count() == 0
    assert page.evaluate("window.__sameDocument === true")
    # FIFO: the 4th left the queue only when the 12 s run freed its slot, after the 3rd had.
    runs = {r.pk: r for r in WorkflowRun.objects.filter(pk__in=[x.run.pk for x in (r1, r2, r3, r4)])}
    assert runs[r3.run.pk].dequeued_at < runs[r4.run.pk].dequeued_at
    assert runs[r4.run.pk].dequeued_at >= runs[r2.run.pk].finished_at
    wait_for(lambda: not WorkflowRun.objects.filter(status__in=WorkflowRun.UNFINISHED).exists(), timeout=30,
             message="every run to finish")
