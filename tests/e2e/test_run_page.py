"""A real browser launches reportingFlow from the flows page and watches the run page update live
until every step has succeeded; the http steps call real sample-service instances (process
driver) that a real qcluster's workers reach, with the real controller converging the fleet."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from tests.conftest import wait_for
from tests.e2e.conftest import login
from workflows.models import StepRun, WorkflowRun

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True),
              pytest.mark.timeout(180)]


def test_launch_reporting_flow_and_watch_it_finish(live_server, page, demo_fleet) -> None:
    User.objects.create_superuser("alice", "alice@example.org", "pw-alice-123")
    cluster = demo_fleet

    login(page, live_server, "alice", "pw-alice-123")
    page.goto(f"{live_server.url}/flows/")
    form = page.locator("form.launch-form")
    form.locator("select[name=flowId]").select_option("reportingFlow")
    # Not JSON: the page refuses before anything is sent.
    form.locator("textarea[name=data]").fill('{"dataset": ')
    form.locator("button[type=submit]").click()
    assert form.locator(".json-error").is_visible()
    assert page.url == f"{live_server.url}/flows/" and WorkflowRun.objects.count() == 0

    form.locator("textarea[name=data]").fill('{"dataset": "2026-Q4"}')
    assert not form.locator(".json-error").is_visible()
    form.locator("button[type=submit]").click()
    page.wait_for_url(f"{live_server.url}/runs/*/")
    run = WorkflowRun.objects.get()
    assert run.data == {"dataset": "2026-Q4"}
    page.evaluate("window.__sameDocument = true")  # gone if the page reloaded instead of swapping

    def settled() -> bool:
        run.refresh_from_db()
        return run.status not in WorkflowRun.ACTIVE

    try:
        wait_for(settled, timeout=60, interval=0.2, message="the run to finish")
    except AssertionError:
        steps = list(StepRun.objects.filter(run=run).values_list("name", "status", "error"))
        raise AssertionError(f"{run.status} {steps}\n{cluster.output()[-3000:]}") from None
    # Every step's card shows "succeeded" once the run is done - swapped in by htmx polling.
    steps = list(StepRun.objects.filter(run=run).values_list("name", "status", "attempts", "error"))
    assert run.status == "succeeded", f"{steps}\n{cluster.output()[-3000:]}"
    page.wait_for_selector("#run[data-status=succeeded]", timeout=10_000)
    for name in ("ingest", "validation", "reporting"):
        assert page.locator(f".step[data-step={name}]").get_attribute("data-status") == "succeeded"
    assert page.evaluate("window.__sameDocument === true")
    assert "hx-trigger" not in page.locator("#run").evaluate("e => e.outerHTML")  # finished: polling stops

    run.refresh_from_db()
    assert run.status == "succeeded"
    for s in StepRun.objects.filter(run=run):
        # A real sample instance answered, and saw the run/step idempotency key.
        assert s.output["status"] == 200 and s.attempts == 1
        assert s.output["response"]["idempotencyKey"] == f"run-{run.pk}/{s.name}"
