"""Bulk operations on the runs list (issue 16): cancel or retry the checked runs or every run
matching the filter; each run permission-checked and audited on its own, with a count of what was
done and refused."""

from __future__ import annotations

import pytest
from guardian.shortcuts import assign_perm

from audit import events
from audit.models import AuditEntry
from tests.conftest import api
from tests.workflows.helpers import drain, make_flow, py, step
from workflows import actions
from workflows.models import WorkflowRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def mixed(personas, django_capture_on_commit_callbacks) -> dict[str, list[WorkflowRun]]:
    """7 active runs of bob's, 2 finished of bob's, 1 active of alice's that carol may see only."""
    slow = make_flow("slowish", [step("a"), step("b", "a")])
    out: dict[str, list[WorkflowRun]] = {"active": [], "done": [], "foreign": []}
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(7):
            out["active"].append(actions.start_run(slow, {}, actor=personas["bob"]).run)
        for _ in range(2):
            out["done"].append(drain(actions.start_run(slow, {}, actor=personas["bob"]).run))
        out["foreign"].append(actions.start_run(slow, {}, actor=personas["alice"]).run)
    return out


def test_bulk_cancel_of_the_checked_runs_counts_done_and_refused(personas, clients, mixed) -> None:
    carol = personas["carol"]
    for run in [*mixed["active"], *mixed["done"], *mixed["foreign"]]:
        assign_perm("workflows.view_workflowrun", carol, run)
    for run in [*mixed["active"], *mixed["done"]]:
        assign_perm("workflows.cancel_workflowrun", carol, run)  # not on alice's run
    ids = [r.pk for r in [*mixed["active"], *mixed["done"], *mixed["foreign"]]]
    resp = clients["carol"].post("/runs/bulk/", {"op": "cancel", "scope": "selected", "runs": ids},
                                 HTTP_HX_REQUEST="true")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert "7 cancelled, 2 refused: not active, 1 refused: not permitted" in html
    assert 'id="bulk-result"' in html and "<html" not in html  # the list's fragment, for htmx
    assert WorkflowRun.objects.filter(pk__in=[r.pk for r in mixed["active"]], status="cancelled").count() == 7
    assert WorkflowRun.objects.get(pk=mixed["foreign"][0].pk).status == "pending"
    cancels = AuditEntry.objects.filter(action=events.WORKFLOW_CANCEL)
    assert cancels.count() == 7 and {e.actor for e in cancels} == {"carol"}
    summary = AuditEntry.objects.get(action=events.WORKFLOW_BULK)
    assert {k: sorted(v) for k, v in summary.payload["refused"].items()} == {
        "not active": sorted(r.pk for r in mixed["done"]), "not permitted": [mixed["foreign"][0].pk]}
    assert {e.payload[events.BULK] for e in cancels} == {summary.payload[events.BULK]}


def test_bulk_cancel_of_every_run_matching_the_filter(personas, clients, mixed) -> None:
    resp = clients["bob"].post("/runs/bulk/", {"op": "cancel", "scope": "filter", "status": "pending",
                                               "flow": "slowish"}, follow=True)
    assert "8 cancelled" in resp.content.decode()
    # bob (an operator) sees and may cancel alice's run too: 8 were pending.
    assert WorkflowRun.objects.filter(status="cancelled").count() == 8
    assert WorkflowRun.objects.filter(status="succeeded").count() == 2  # outside the filter: untouched


def test_invisible_runs_are_not_found_and_untouched(personas, clients, mixed) -> None:
    ids = [r.pk for r in mixed["active"]]
    resp = clients["dave"].post("/runs/bulk/", {"op": "cancel", "scope": "selected", "runs": ids}, follow=True)
    assert "0 cancelled, 7 refused: not found" in resp.content.decode()
    assert not WorkflowRun.objects.filter(status="cancelled").exists()


def test_bulk_retry_checks_each_run(personas, clients, django_capture_on_commit_callbacks) -> None:
    failing = make_flow("failsome", [py("a", "flaky", kwargs={"fail_attempts": 1})])
    with django_capture_on_commit_callbacks(execute=True):
        failed = [drain(actions.start_run(failing, {}, actor=personas["bob"]).run) for _ in range(3)]
        running = actions.start_run(failing, {}, actor=personas["bob"]).run
    assert all(r.status == "failed" for r in failed)
    with django_capture_on_commit_callbacks(execute=True):
        resp = api(clients["bob"], "POST", "/mgmt/workflows/bulk",
                   {"op": "retry", "runIds": [r.pk for r in failed] + [running.pk, 999999]})
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert sorted(body["done"]) == sorted(r.pk for r in failed)
    assert body["refused"] == {"not failed or cancelled": [running.pk], "not found": [999999]}
    assert body["summary"] == "3 retried, 1 refused: not failed or cancelled, 1 refused: not found"
    assert all(drain(r).status == "succeeded" for r in failed)
    retries = AuditEntry.objects.filter(action=events.WORKFLOW_RETRY)
    assert retries.count() == 3 and all(e.payload[events.RETRIED_BY] == "bob" for e in retries)


def test_bulk_refuses_bad_input(clients) -> None:
    assert api(clients["bob"], "POST", "/mgmt/workflows/bulk", {"op": "explode", "runIds": [1]}).status_code == 400
    resp = api(clients["bob"], "POST", "/mgmt/workflows/bulk", {"op": "cancel", "runIds": [1], "filter": {}})
    assert resp.status_code == 400 and "not both" in resp.json()["detail"]
    assert api(clients["bob"], "POST", "/mgmt/workflows/bulk",
               {"op": "cancel", "runIds": list(range(1, 502))}).status_code == 400
    resp = clients["bob"].post("/runs/bulk/", {"op": "cancel", "scope": "selected"}, follow=True)
    assert "Select at least one run" in resp.content.decode()
    resp = clients["bob"].post("/runs/bulk/", {"op": "cancel", "runs": ["x"], "scope": "selected"}, follow=True)
    assert "Not a run id" in resp.content.decode()
    assert not AuditEntry.objects.filter(action=events.WORKFLOW_BULK).exists()


def test_the_runs_list_offers_checkboxes_and_the_bulk_form(clients, mixed) -> None:
    html = clients["bob"].get("/runs/").content.decode()
    assert 'id="bulk-form"' in html and f'name="runs" value="{mixed["active"][0].pk}" form="bulk-form"' in html
