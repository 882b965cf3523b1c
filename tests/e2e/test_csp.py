"""Content-Security-Policy: every page carries it (script-src 'self', no inline script, no eval),
and a real browser visiting every main page sees no violation while the pages still work (the
launch form's JSON check, an htmx action swapping in place)."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.e2e.conftest import login
from workflows import actions as wf_actions
from workflows.models import WorkflowDefinition

CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " "
                    + (e.sourceFile || "") + ":" + e.lineNumber);
});
"""


def main_pages(run_id: int) -> list[str]:
    return ["/", "/services/HMS-SVC/", "/sla/", "/services/HMS-SVC/sla/", "/flows/", "/runs/", f"/runs/{run_id}/",
            "/audit/", "/system/", "/admin/", "/admin/fleet/service/", "/mgmt/docs"]


def policy(response) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    header = response["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in header.split(";")) if d}


@pytest.mark.django_db
def test_every_page_carries_the_policy(personas, demo) -> None:
    run = wf_actions.start_run(WorkflowDefinition.objects.get(slug="analyticsReport"), {"seconds": 30},
                               actor=personas["alice"]).run
    c = Client()
    c.force_login(personas["alice"])
    anon = Client()
    responses = {path: c.get(path) for path in main_pages(run.pk)}
    responses["/login/ (anonymous)"] = anon.get("/login/")
    responses["404"] = c.get("/no/such/page/")
    responses["/mgmt/services (API)"] = c.get("/mgmt/services")
    for path, r in responses.items():
        assert "Content-Security-Policy" in r, f"{path} ({r.status_code}) has no Content-Security-Policy"
        p = policy(r)
        assert p["script-src"] == ["'self'"], (path, p)
        assert p["default-src"] == ["'self'"] and p["object-src"] == ["'none'"] and p["frame-ancestors"] == ["'none'"]
        assert not any("unsafe" in v for v in p["script-src"] + p["default-src"])
    for path in main_pages(run.pk):
        body = responses[path].content.decode()
        assert responses[path].status_code == 200, path
        # No inline script a policy would have to allow: every <script> has a src (or is data).
        for tag in body.split("<script")[1:]:
            head = tag.split(">", 1)[0]
            assert "src=" in head or 'type="application/json"' in head, f"inline script on {path}: <script{head}>"
        assert " onclick=" not in body and " onchange=" not in body and "hx-on" not in body, path
    assert '"allowEval": false' in responses["/"].content.decode()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_a_browser_sees_no_csp_violation_on_any_page_and_the_pages_still_work(live_server, page, personas,
                                                                              demo) -> None:
    run = wf_actions.start_run(WorkflowDefinition.objects.get(slug="analyticsReport"), {"seconds": 30},
                               actor=personas["alice"]).run
    messages: list[str] = []
    errors: list[str] = []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.add_init_script(CSP_WATCH)

    login(page, live_server, "alice", "pw-alice-123")
    violations: dict[str, list[str]] = {}
    for path in main_pages(run.pk):
        before = len(messages)
        response = page.goto(f"{live_server.url}{path}")
        assert response is not None and response.status == 200, path
        assert "Content-Security-Policy" in {k.title(): v for k, v in response.headers.items()}
        page.wait_for_load_state("load")
        if path == "/mgmt/docs":
            page.locator(".swagger-ui .opblock").first.wait_for(timeout=15_000)  # Swagger UI rendered
        page.wait_for_timeout(300)  # let deferred scripts and a first htmx load run
        found = page.evaluate("window.__csp") + [m for m in messages[before:]
                                                 if "Content Security Policy" in m or "htmx:evalDisallowed" in m]
        if found:
            violations[path] = found
    assert not violations, f"CSP violations: {violations}"
    assert not errors, f"script errors: {errors}"

    # The launch form's JSON check (moved from an inline script to static/js/console.js) still works.
    page.goto(f"{live_server.url}/flows/")
    form = page.locator("form.launch-form")
    form.locator("textarea[name=data]").fill('{"dataset": ')
    form.locator("button[type=submit]").click()
    assert form.locator(".json-error").is_visible()
    assert page.url == f"{live_server.url}/flows/"

    # An htmx action still swaps in place: the audit page's "Verify chain" fills #verification.
    page.goto(f"{live_server.url}/audit/")
    page.evaluate("window.__sameDocument = true")
    before = page.locator("#verification").inner_html()
    page.locator("#verification + form button[type=submit]").click()
    page.wait_for_function("(b) => document.querySelector('#verification').innerHTML !== b", arg=before,
                           timeout=15_000)
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded instead of swapping"
    # Polling still runs without hx-trigger filters: the services table is fetched again by itself.
    page.goto(f"{live_server.url}/")
    with page.expect_request(lambda r: "HX-Request" in {k.title(): v for k, v in r.headers.items()}
                             or r.headers.get("hx-request") == "true", timeout=10_000):
        pass
    assert not page.evaluate("window.__csp"), page.evaluate("window.__csp")
