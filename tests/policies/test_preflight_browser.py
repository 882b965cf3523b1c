"""A real browser: the preflight beside the scale and launch controls answers as the user types a
count or picks a flow, before any click."""

from __future__ import annotations

import pytest

from fleet.models import Service
from policies.models import Policy
from tests.e2e.conftest import login
from workflows import actions
from workflows.models import WorkflowDefinition, WorkflowRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def test_scale_preflight_follows_the_typed_count(live_server, page, personas, demo):  # noqa: F811
    Policy.objects.create(name="svc bounds", kind=Policy.Kind.INSTANCE_BOUNDS,
                          service=Service.objects.get(name="HMS-SVC"),
                          max_instances=3)
    login(page, live_server, "bob", "pw-bob-123")
    verdict = "tr[data-service='HMS-SVC'] .preflight"
    # Asked as the user types (or focuses the count), not on every redraw: with 50 rows a page, a
    # preflight per row on each 3 s refresh was 50 requests per open browser.
    assert page.locator(verdict).count() == 0
    page.locator("tr[data-service='HMS-SVC'] input[name=instances]").focus()
    page.locator(f"{verdict}[data-allowed='true']").wait_for()  # the current count is allowed
    # The services table refreshes every 3 s and redraws the row; typing again after a redraw is
    # what a user would do, so try a few times rather than race the refresh.
    for _ in range(5):
        page.locator("tr[data-service='HMS-SVC'] input[name=instances]").fill("5")
        try:
            page.locator(f"{verdict}[data-allowed='false']").wait_for(timeout=2_500)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: the row was redrawn
            continue
    text = page.locator(f"{verdict}[data-allowed='false']").inner_text()
    assert "HMS-SVC may run at most 3 instances; 5 requested." in text
    assert Service.objects.get(name="HMS-SVC").desired_instances == 0  # nothing was clicked


def test_launch_preflight_follows_the_picked_flow(live_server, page, personas, demo):  # noqa: F811
    bob, flow = personas["bob"], WorkflowDefinition.objects.get(slug="analyticsReport")
    for _ in range(5):
        assert actions.start_run(flow, {"seconds": 30}, actor=bob).run
    login(page, live_server, "bob", "pw-bob-123")
    page.goto(f"{live_server.url}/runs/")
    page.select_option("select[name=flowId]", "exportPatientData")
    page.locator(".preflight-slot .preflight[data-allowed='true']").wait_for()
    page.select_option("select[name=flowId]", "analyticsReport")
    refused = page.locator(".preflight-slot .preflight[data-allowed='false']")
    refused.wait_for()
    assert "5 of 5 analytics runs already active for bob." in refused.inner_text()
    assert WorkflowRun.objects.count() == 5
