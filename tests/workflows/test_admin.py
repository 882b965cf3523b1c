"""Editing a flow in Django admin: validated (the form shows the problem), saved with one audit entry."""

from __future__ import annotations

import json

import pytest

from audit.models import AuditEntry
from tests.workflows.helpers import make_flow
from workflows.models import WorkflowDefinition

pytestmark = pytest.mark.django_db


def form(flow: WorkflowDefinition, steps: list) -> dict[str, str]:
    return {"slug": flow.slug, "name": flow.name, "description": "", "tags": json.dumps(flow.tags),
            "steps": json.dumps(steps), "enabled": "on"}


def test_an_invalid_edit_is_refused_with_the_problem_named(clients, personas) -> None:
    flow = make_flow("edited", [{"name": "a", "action": "noop"}])
    before = AuditEntry.objects.count()
    url = f"/admin/workflows/workflowdefinition/{flow.pk}/change/"
    resp = clients["alice"].post(url, form(flow, [{"name": "a", "action": "noop", "depends_on": ["a"]}]))
    assert resp.status_code == 200 and "depends on itself" in resp.content.decode()
    resp = clients["alice"].post(url, form(flow, [{"name": "a", "action": "http", "params": {}}]))
    assert "params.service" in resp.content.decode()
    assert WorkflowDefinition.objects.get(pk=flow.pk).steps == [{"name": "a", "action": "noop"}]
    assert AuditEntry.objects.count() == before


def test_a_valid_edit_is_saved_and_audited(clients, personas) -> None:
    flow = make_flow("edited", [{"name": "a", "action": "noop"}])
    url = f"/admin/workflows/workflowdefinition/{flow.pk}/change/"
    steps = [{"name": "a", "action": "noop"}, {"name": "b", "action": "noop", "depends_on": ["a"], "retries": 2}]
    resp = clients["alice"].post(url, form(flow, steps))
    assert resp.status_code == 302
    assert WorkflowDefinition.objects.get(pk=flow.pk).steps == steps
    assert AuditEntry.objects.filter(action="flow.update", actor="alice").count() == 1


def test_a_run_is_read_only_in_admin(clients, personas) -> None:
    from workflows import actions

    run = actions.start_run(make_flow("ro", [{"name": "a", "action": "noop"}]), {}, actor=personas["alice"]).run
    resp = clients["alice"].get(f"/admin/workflows/workflowrun/{run.pk}/change/")
    assert resp.status_code == 200 and "ro" in resp.content.decode()
    assert clients["alice"].get("/admin/workflows/workflowrun/add/").status_code == 403
