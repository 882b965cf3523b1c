"""The audit page, GET /mgmt/audit and the exports: who may read, the filters, keyset paging,
the detail's diff and hash links, Verify chain, and an export that round-trips."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from audit.actions import record
from audit.export import read_jsonl, verify_rows
from audit.models import AuditEntry, AuditVerification
from audit.sealer import seal_pending
from tests.conftest import as_owner

pytestmark = pytest.mark.django_db


@pytest.fixture
def log(personas) -> dict[str, AuditEntry]:
    """A small history, including the auditor's question: who changed the analytics policy?"""
    from policies.models import Policy

    policy = Policy.objects.create(name="analytics jobs per user ≤ 5", kind=Policy.Kind.CONCURRENT_RUNS,
                                   scope_tag="analytics", per_user=True, limit=5)
    out = {}
    with transaction.atomic():
        out["scale"] = record("scale", actor=personas["bob"], target_type="fleet.service", target_id="1",
                              payload={"from": 1, "to": 3})
    with transaction.atomic():
        out["policy"] = record("policy.update", actor=personas["alice"], target=policy,
                               payload={"name": policy.name, "changes": {"limit": [5, 3],
                                                                         "description": ["old text", "new text"]}})
    with transaction.atomic():
        out["denied"] = record("workflow.start", actor=personas["carol"], target_type="workflows.workflowdefinition",
                               target_id="7", outcome=AuditEntry.Outcome.DENIED, payload={"flowId": "nightly-report"})
    seal_pending()
    return {k: AuditEntry.objects.get(pk=v.pk) for k, v in out.items()}


# --- who may read ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("who", "status"), [("alice", 200), ("erin", 200), ("bob", 403), ("dave", 403)])
def test_page_and_api_are_for_auditors_only(clients, auditor, who: str, status: int) -> None:
    if who == "erin":
        clients["erin"] = Client()
        clients["erin"].force_login(auditor)
    assert clients[who].get("/audit/").status_code == status
    assert clients[who].get("/mgmt/audit").status_code == status
    assert clients[who].get("/mgmt/audit/export?format=csv").status_code == status


def test_anonymous_is_sent_to_sign_in_or_gets_401(clients) -> None:
    assert clients["anon"].get("/audit/").status_code == 302
    r = clients["anon"].get("/mgmt/audit")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


# --- filters ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "expected"), [
    ({"actor": "alice"}, ["policy"]),
    ({"actor": "b*"}, ["scale"]),
    ({"action": "policy.update"}, ["policy"]),
    ({"action": "policy.*"}, ["policy"]),
    ({"outcome": "denied"}, ["denied"]),
    ({"target": "analytics"}, ["policy"]),
    ({"target": "services.service:1"}, ["scale"]),
    ({"q": "nightly"}, ["denied"]),
    ({"q": "old text"}, ["policy"]),
    ({"q": "nothing-like-this"}, []),
])
def test_filters_on_the_api(clients, log, params: dict, expected: list[str]) -> None:
    r = clients["alice"].get("/mgmt/audit", params)
    assert r.status_code == 200, r.content
    ids = [item["id"] for item in r.json()["items"] if item["action"] != "access.refused"]
    assert ids == [log[name].pk for name in expected]


def test_time_range_filter(clients, log) -> None:
    today = timezone.now().date()
    yesterday = today - timedelta(days=1)
    r = clients["alice"].get("/mgmt/audit", {"since": str(today), "action": "scale"})
    assert [i["id"] for i in r.json()["items"]] == [log["scale"].pk]
    r = clients["alice"].get("/mgmt/audit", {"until": str(yesterday)})
    assert r.json()["items"] == []


@pytest.mark.parametrize("params", [{"outcome": "maybe"}, {"since": "last tuesday"}, {"before": "x"},
                                    {"limit": "-1"}])
def test_bad_filters_are_a_400_not_a_500(clients, log, params: dict) -> None:
    r = clients["alice"].get("/mgmt/audit", params)
    assert r.status_code == 400 and r.json()["error"] == "invalid_filter"
    assert clients["alice"].get("/audit/", params).status_code == 400
    assert clients["alice"].get("/mgmt/audit/export", params).status_code == 400


def test_keyset_pagination_walks_everything_once(clients, personas) -> None:
    for i in range(23):
        with transaction.atomic():
            record("test.page", actor="system:test", payload={"i": i})
    seen: list[int] = []
    before = None
    while True:
        params = {"action": "test.page", "limit": 10, **({"before": before} if before else {})}
        body = clients["alice"].get("/mgmt/audit", params).json()
        seen += [item["payload"]["i"] for item in body["items"]]
        before = body["next_before"]
        if before is None:
            break
    assert seen == list(reversed(range(23)))
    # The page walks the same way, and "newer" comes back.
    r = clients["alice"].get("/audit/", {"action": "test.page", "limit": 10})
    assert r.status_code == 200 and b"older" in r.content


def test_page_shows_pending_entries_before_they_are_sealed(clients, personas) -> None:
    with transaction.atomic():
        record("test.pending", actor="system:test")
    r = clients["alice"].get("/audit/")
    assert b"pending" in r.content and b"test.pending" in r.content


# --- the auditor's question -------------------------------------------------------------------------
def test_who_changed_the_analytics_policy_and_what_did_it_say_before(clients, log) -> None:
    since = (timezone.now() - timedelta(days=7)).date()
    r = clients["alice"].get("/audit/", {"action": "policy.update", "target": "analytics", "since": str(since)})
    assert r.status_code == 200
    detail_url = f"/audit/{log['policy'].pk}/"
    assert detail_url.encode() in r.content
    page = clients["alice"].get(detail_url).content.decode()
    assert "alice" in page and "analytics jobs per user" in page
    assert '<td class="before"><pre>5</pre></td><td class="after"><pre>3</pre></td>' in page
    assert "old text" in page and "new text" in page
    assert "✓ matches content" in page and "✓ linked" in page


def test_detail_links_to_its_neighbours_in_the_chain(clients, log) -> None:
    page = clients["alice"].get(f"/audit/{log['policy'].pk}/").content.decode()
    assert f'href="/audit/{log["scale"].pk}/"' in page and f'href="/audit/{log["denied"].pk}/"' in page


def test_detail_of_a_missing_entry_is_404(clients) -> None:
    assert clients["alice"].get("/audit/999999/").status_code == 404
    assert clients["alice"].get("/mgmt/audit/999999").status_code == 404


# --- export ---------------------------------------------------------------------------------------------
def _body(response) -> str:
    return b"".join(response.streaming_content).decode()


def test_jsonl_export_round_trips_and_reverifies(clients, log) -> None:
    r = clients["alice"].get("/mgmt/audit/export", {"format": "jsonl"})
    assert r.status_code == 200 and r.streaming
    assert r["Content-Type"] == "application/x-ndjson"
    items = list(read_jsonl(_body(r).splitlines()))
    assert [i["id"] for i in items if i["action"] != "access.refused"][:3] == [
        log["scale"].pk, log["policy"].pk, log["denied"].pk]
    assert items[1]["payload"]["changes"]["limit"] == [5, 3]
    result = verify_rows(items)
    assert result.ok and result.last_seq == 3
    items[1]["payload"]["changes"]["limit"] = [5, 50]
    assert not verify_rows(items).ok


def test_csv_export_round_trips(clients, log) -> None:
    r = clients["alice"].get("/mgmt/audit/export", {"format": "csv", "actor": "alice"})
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(_body(r))))
    assert len(rows) == 1
    assert rows[0]["action"] == "policy.update" and rows[0]["seq"] == str(log["policy"].seq)
    assert json.loads(rows[0]["payload"]) == log["policy"].payload
    assert rows[0]["hash"] == log["policy"].hash


def test_export_rejects_an_unknown_format(clients, log) -> None:
    r = clients["alice"].get("/mgmt/audit/export", {"format": "xml"})
    assert r.status_code == 400 and r.json()["field"] == "format"


# --- verify chain button ---------------------------------------------------------------------------------
def test_verify_chain_button_reports_intact(clients, log) -> None:
    r = clients["alice"].post("/audit/verify/")
    assert r.status_code == 302
    v = AuditVerification.objects.get()
    assert v.status == "intact" and v.last_seq == 3 and v.requested_by == "alice"
    assert AuditEntry.objects.filter(action="audit.verify", actor="alice").count() == 1
    page = clients["alice"].get("/audit/").content.decode()
    assert "Chain intact up to seq <strong>3</strong>" in page


def test_verify_chain_button_shows_the_first_broken_link(clients, log) -> None:
    from django.db import connection

    from audit import triggers

    with as_owner():
        triggers.uninstall(connection)
        try:
            AuditEntry.objects.filter(seq=2).update(payload={"changes": {"limit": [5, 1]}})
        finally:
            triggers.install(connection)
    r = clients["alice"].post("/audit/verify/", HTTP_HX_REQUEST="true")
    assert r.status_code == 200
    html = r.content.decode()
    assert "First broken link at seq <strong>2</strong>" in html and "entry edited" in html


def test_big_logs_verify_in_the_background(clients, log, settings) -> None:
    from audit.verify import run_verification

    settings.HMS_AUDIT_VERIFY_INLINE_MAX = 1
    clients["alice"].post("/audit/verify/")
    v = AuditVerification.objects.get()
    assert v.status == "queued"
    html = clients["alice"].get(f"/audit/verify/{v.pk}/").content.decode()
    assert 'hx-trigger="every 2s"' in html
    run_verification(v.pk)  # what the django-q2 worker runs
    run_verification(v.pk)  # a second delivery is a no-op
    v.refresh_from_db()
    assert v.status == "intact" and v.checked == 3


def test_verify_requires_post_and_an_auditor(clients, log) -> None:
    assert clients["alice"].get("/audit/verify/").status_code == 405
    assert clients["bob"].post("/audit/verify/").status_code == 403
