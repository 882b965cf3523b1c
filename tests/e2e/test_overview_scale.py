"""A real browser: sign in, scale HMS-SVC from the overview (htmx), see the new count."""

from __future__ import annotations

import pytest

from fleet.models import Service
from tests.e2e.conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_admin_scales_from_the_overview(live_server, page, personas, demo, stop_local_instances, spawn):
    spawn("controller")  # the real control loop brings the new instances to "running"
    login(page, live_server, "alice", "pw-alice-123")
    row = page.locator("tr[data-service='HMS-SVC']")
    assert row.locator("td.desired").inner_text() == "0"
    row.locator("input[name=instances]").fill("2")
    row.locator("button[type=submit]").click()
    # The row is swapped in place by htmx with the new desired count and a confirmation.
    page.locator("tr[data-service='HMS-SVC'] .scale-result.ok").wait_for()
    assert page.locator("tr[data-service='HMS-SVC'] td.desired").inner_text() == "2"
    assert page.url == f"{live_server.url}/"  # no full page navigation
    assert Service.objects.get(name="HMS-SVC").desired_instances == 2
    # The live refresh (every 3 s) shows the instances up, as the controller marks them healthy.
    page.wait_for_function(
        "document.querySelector(\"tr[data-service='HMS-SVC'] td.running\").innerText.trim().startsWith('2')",
        timeout=20_000,
    )


def test_operator_without_scale_rights_sees_view_only(live_server, page, personas, demo):
    login(page, live_server, "carol", "pw-carol-123")
    assert page.locator("tr[data-service='HMS-SVC']").count() == 0  # analysts do not see services
