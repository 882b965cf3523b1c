"""The scale step acts as the run's actor: their permission, the policies and the audit log apply
exactly as for POST /mgmt/scale."""

from __future__ import annotations

import pytest

from audit.models import AuditEntry
from fleet.models import Service
from tests.workflows.helpers import drain, make_flow, step
from workflows import actions
from workflows.models import StepRun

pytestmark = pytest.mark.django_db


def scale_flow():  # type: ignore[no-untyped-def]
    return make_flow("scaleit", [step("up", action="scale",
                                      params={"service": "HMS-SVC", "instances": "$data.n", "wait": False})])


def test_an_operator_scales_through_a_flow(personas, demo, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        run = actions.start_run(scale_flow(), {"n": 2}, actor=personas["bob"]).run
    assert drain(run).status == "succeeded"
    assert Service.objects.get(name="HMS-SVC").desired_instances == 2
    entry = AuditEntry.objects.filter(action="scale").latest("id")  # seq is set by the sealer, later
    assert entry.actor == "bob" and entry.payload["to"] == 2 and f"workflow run {run.pk}" in entry.payload["reason"]


def test_a_runner_without_scale_rights_cannot_scale_through_a_flow(personas, demo,
                                                                   django_capture_on_commit_callbacks) -> None:
    from guardian.shortcuts import assign_perm

    flow = scale_flow()
    assign_perm("workflows.view_workflowdefinition", personas["carol"], flow)
    assign_perm("workflows.run_workflowdefinition", personas["carol"], flow)
    with django_capture_on_commit_callbacks(execute=True):
        run = actions.start_run(flow, {"n": 3}, actor=personas["carol"]).run
    assert drain(run).status == "failed"
    assert StepRun.objects.get(run=run, name="up").error == "carol may not scale HMS-SVC"
    assert Service.objects.get(name="HMS-SVC").desired_instances == 0


def test_a_bad_count_from_data_fails_the_step(personas, demo, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        run = actions.start_run(scale_flow(), {"n": "many"}, actor=personas["bob"]).run
    assert drain(run).status == "failed"
    assert "non-negative integer" in StepRun.objects.get(run=run, name="up").error
