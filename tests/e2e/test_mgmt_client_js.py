"""The chapter's mgmtClient.js, run in a real browser on the console's origin with only a bearer
token (no session): scaleService() and runWorkflow() work as the chapter shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.models import AuditEntry
from fleet.models import Service
from workflows.models import WorkflowRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
CLIENT = (Path(__file__).resolve().parents[2] / "examples" / "mgmtClient.js").read_text()
CLIENT_PATH = "/static/test-only/mgmtClient.js"


def load_client(page, base: str) -> None:  # type: ignore[no-untyped-def]
    """The client as a same-origin script file, unchanged: the console's CSP (script-src 'self',
    no inline script) refuses an inline copy, as it should."""
    page.route(f"{base}{CLIENT_PATH}", lambda route: route.fulfill(
        status=200, content_type="application/javascript", body=CLIENT))
    page.add_script_tag(url=f"{base}{CLIENT_PATH}")


def test_chapter_client_calls_succeed(live_server, page, personas, tokens, demo, stop_local_instances):
    page.goto(f"{live_server.url}/login/")  # any page of the console's origin; not signed in
    page.evaluate(f"globalThis.MGMT_TOKEN = {tokens['alice']!r};")
    load_client(page, live_server.url)
    status = page.evaluate("scaleService('HMS-SVC', 1).then(r => r.status)")
    assert status == 200
    assert Service.objects.get(name="HMS-SVC").desired_instances == 1
    result = page.evaluate("runWorkflow('exportPatientData', { user: 123 })")
    assert result["status"] == "started" and isinstance(result["runId"], int)
    run = WorkflowRun.objects.get(pk=result["runId"])
    assert run.data == {"user": 123} and run.actor.username == "alice"
    actions = list(AuditEntry.objects.filter(actor="alice").values_list("action", flat=True))
    assert sorted(actions) == ["scale", "workflow.start"]


def test_chapter_client_without_token_gets_401(live_server, page, demo):
    page.goto(f"{live_server.url}/login/")
    page.evaluate("globalThis.MGMT_TOKEN = 'hms_wrong_token';")
    load_client(page, live_server.url)
    assert page.evaluate("scaleService('HMS-SVC', 3).then(r => r.status)") == 401
    assert Service.objects.get(name="HMS-SVC").desired_instances == 0
