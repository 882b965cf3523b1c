"""A real browser answers the auditor's question in a few clicks: who changed the analytics
policy, and what did it say before? Then "Verify chain" (htmx) shows the chain intact."""

from __future__ import annotations

import pytest
from django.db import transaction

from audit.sealer import seal_pending
from tests.e2e.conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_auditor_finds_who_changed_the_analytics_policy(live_server, page, personas, auditor):  # noqa: F811
    from policies.actions import save_policy
    from policies.models import Policy

    with transaction.atomic():
        policy = Policy.objects.create(name="analytics jobs per user ≤ 5", kind=Policy.Kind.CONCURRENT_RUNS,
                                       scope_tag="analytics", per_user=True, limit=5)
    policy.limit = 3
    save_policy(policy, actor=personas["alice"])
    seal_pending()

    login(page, live_server, "erin", "pw-erin-123")
    page.click("header >> text=Audit")
    page.fill("input[name=action]", "policy.update")
    page.fill("input[name=target]", "analytics")
    page.click("#audit-filters button[type=submit]")
    rows = page.locator("#audit-table tbody tr")
    assert rows.count() == 1
    assert "alice" in rows.first.inner_text()
    rows.first.locator("a", has_text="policy.update").click()
    diff = page.locator("table.diff")
    assert diff.locator("td", has_text="limit").count() == 1
    assert diff.locator("td.before").first.inner_text().strip() == "5"
    assert diff.locator("td.after").first.inner_text().strip() == "3"
    assert "✓ matches content" in page.content()

    page.click("text=← Audit log")
    page.click("button:has-text('Verify chain')")
    page.locator("#verification >> text=Chain intact up to seq").wait_for()
    assert page.url.rstrip("/").endswith("/audit")  # swapped in place by htmx
