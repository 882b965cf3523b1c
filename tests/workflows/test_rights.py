"""Approvals and acting rights (issue 14): four eyes on approval steps, approvers named on the step,
a rejection is final, and a retry acts with the rights of the person who clicks, checked then."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.utils import timezone
from guardian.shortcuts import assign_perm

from audit import events
from audit.models import AuditEntry
from fleet.models import Service
from policies.models import Policy
from tests.conftest import api
from tests.workflows.helpers import drain, make_flow, py, step
from workflows import actions
from workflows.models import StepRun, WorkflowDefinition, WorkflowRun

pytestmark = pytest.mark.django_db


def started(flow: WorkflowDefinition, who, capture, data: dict | None = None) -> WorkflowRun:  # type: ignore[no-untyped-def]
    with capture(execute=True):
        run = actions.start_run(flow, data or {}, actor=who).run
    assert run is not None
    return drain(run)


def approve(client, run: WorkflowRun, approve: bool = True, step_name: str = "gate"):  # type: ignore[no-untyped-def]
    return api(client, "POST", f"/mgmt/workflows/{run.pk}/steps/{step_name}/approve", {"approve": approve})


# --- four eyes -------------------------------------------------------------------------------------
def test_the_starter_may_not_approve_their_own_run(personas, clients, django_capture_on_commit_callbacks) -> None:
    run = started(make_flow("gated", [step("gate", action="approval"), step("b", "gate")]), personas["bob"],
                  django_capture_on_commit_callbacks)
    resp = approve(clients["bob"], run)  # bob holds approve on his own run: the right alone is not enough
    assert resp.status_code == 403, resp.content
    assert resp.json()["error"] == "self_approval" and "second person" in resp.json()["detail"]
    assert StepRun.objects.get(run=run, name="gate").status == "waiting"
    assert not AuditEntry.objects.filter(action=events.WORKFLOW_APPROVE).exists()
    # The page offers bob no buttons and says why.
    html = clients["bob"].get(f"/runs/{run.pk}/").content.decode()
    assert 'value="true"' not in html and "needs a second person" in html
    with django_capture_on_commit_callbacks(execute=True):
        assert approve(clients["alice"], run).status_code == 200
    entry = AuditEntry.objects.get(action=events.WORKFLOW_APPROVE)
    assert entry.actor == "alice" and entry.payload[events.STARTED_BY] == "bob"
    assert drain(run).status == "succeeded"


def test_allow_self_approval_lets_the_starter_decide(personas, clients, django_capture_on_commit_callbacks) -> None:
    run = started(make_flow("selfok", [step("gate", action="approval", allow_self_approval=True)]), personas["bob"],
                  django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        assert approve(clients["bob"], run).status_code == 200
    assert drain(run).status == "succeeded"


def test_self_approval_is_refused_on_the_page_too(personas, clients, django_capture_on_commit_callbacks) -> None:
    run = started(make_flow("gatedp", [step("gate", action="approval")]), personas["bob"],
                  django_capture_on_commit_callbacks)
    resp = clients["bob"].post(f"/runs/{run.pk}/steps/gate/approve/", {"approve": "true"}, follow=True)
    assert "needs a second person" in resp.content.decode()
    assert StepRun.objects.get(run=run, name="gate").status == "waiting"


def test_only_the_named_approvers_decide(personas, clients, django_capture_on_commit_callbacks) -> None:
    managers = Group.objects.create(name="release-managers")
    flow = make_flow("named", [step("gate", action="approval", approvers={"group": "release-managers"})])
    run = started(flow, personas["alice"], django_capture_on_commit_callbacks)
    resp = approve(clients["bob"], run)  # an operator (approve_workflowrun) outside the group
    assert resp.status_code == 403 and resp.json()["error"] == "not_an_approver"
    assert "group 'release-managers'" in resp.json()["detail"]
    personas["bob"].groups.add(managers)
    with django_capture_on_commit_callbacks(execute=True):
        assert approve(clients["bob"], run).status_code == 200
    assert StepRun.objects.get(run=run, name="gate").output["by"] == "bob"


def test_a_permission_names_the_approvers(personas, clients, django_capture_on_commit_callbacks) -> None:
    flow = make_flow("byperm", [step("gate", action="approval",
                                     approvers={"permission": "audit.view_auditentry"})])
    run = started(flow, personas["alice"], django_capture_on_commit_callbacks)
    assert approve(clients["bob"], run).status_code == 403
    personas["bob"].groups.add(Group.objects.get(name="auditors"))
    with django_capture_on_commit_callbacks(execute=True):
        assert approve(clients["bob"], run).status_code == 200


@pytest.mark.parametrize(("extra", "message"), [
    ({"approvers": {"group": "no-such-group"}}, "step 'gate': approvers.group: no group named 'no-such-group'"),
    ({"approvers": {"permission": "workflows.fly"}}, "step 'gate': approvers.permission: no permission"),
    ({"approvers": {"role": "x"}}, "step 'gate': approvers: unknown keys role"),
    ({"approvers": "ops"}, "step 'gate': approvers must be an object"),
    ({"allow_self_approval": "yes"}, "step 'gate': allow_self_approval must be true or false"),
])
def test_approver_definitions_are_validated_naming_the_step(extra, message) -> None:
    with pytest.raises(ValidationError) as err:
        make_flow("badappr", [step("gate", action="approval", **extra)])
    assert message in " ".join(err.value.message_dict["steps"])
    assert not WorkflowDefinition.objects.filter(slug="badappr").exists()


def test_approvers_on_a_step_that_is_no_approval_are_refused() -> None:
    with pytest.raises(ValidationError, match="step 'a': approvers and allow_self_approval apply to approval"):
        make_flow("notappr", [step("a", approvers={"group": "operators"})])


def test_a_rejection_is_final(personas, clients, django_capture_on_commit_callbacks) -> None:
    run = started(make_flow("rejfinal", [step("gate", action="approval"), step("b", "gate")]), personas["bob"],
                  django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        assert approve(clients["alice"], run, approve=False).status_code == 200
    run.refresh_from_db()
    assert run.status == "failed"
    for who in ("alice", "bob"):
        resp = api(clients[who], "POST", f"/mgmt/workflows/{run.pk}/retry")
        assert resp.status_code == 409, resp.content
        assert resp.json()["error"] == "not_retryable" and "rejected by alice" in resp.json()["detail"]
    assert StepRun.objects.get(run=run, name="gate").status == "failed"
    assert not AuditEntry.objects.filter(action=events.WORKFLOW_RETRY).exists()


# --- retry acts with the retrier's rights ----------------------------------------------------------
def failing(slug: str = "retryable") -> WorkflowDefinition:
    return make_flow(slug, [py("a", "fail"), step("b", "a")])


def test_a_revoked_owner_cannot_retry_their_run(personas, clients, django_capture_on_commit_callbacks) -> None:
    bob = personas["bob"]
    run = started(failing(), bob, django_capture_on_commit_callbacks)
    assert run.status == "failed"
    bob.groups.clear()  # no longer an operator: no `run` on the flow (he still owns the run)
    resp = api(clients["bob"], "POST", f"/mgmt/workflows/{run.pk}/retry")
    assert resp.status_code == 403, resp.content
    assert resp.json()["error"] == "forbidden" and "needs the run right" in resp.json()["detail"]
    run.refresh_from_db()
    assert run.status == "failed"
    entry = AuditEntry.objects.get(action=events.WORKFLOW_RETRY)
    assert entry.outcome == AuditEntry.Outcome.DENIED and entry.payload["refused"] == "forbidden"
    assert entry.payload[events.STARTED_BY] == "bob" and entry.payload[events.RETRIED_BY] == "bob"


def test_a_disabled_flow_cannot_be_retried_into_life(personas, clients, django_capture_on_commit_callbacks) -> None:
    run = started(failing(), personas["bob"], django_capture_on_commit_callbacks)
    WorkflowDefinition.objects.filter(slug="retryable").update(enabled=False)
    resp = api(clients["alice"], "POST", f"/mgmt/workflows/{run.pk}/retry")
    assert resp.status_code == 409 and resp.json()["error"] == "flow_disabled"
    run.refresh_from_db()
    assert run.status == "failed"


def scale_after(slug: str) -> WorkflowDefinition:
    return make_flow(slug, [py("a", "flaky", kwargs={"fail_attempts": 1}),
                            step("up", "a", action="scale", params={"service": "HMS-SVC", "instances": 2,
                                                                    "wait": False})])


def test_a_retried_run_steps_act_as_the_retrier(personas, demo, clients,
                                                django_capture_on_commit_callbacks) -> None:
    """bob (may scale) starts; the run fails before its scale step; carol (may retry this run and
    run the flow, may not scale) retries: the scale step is checked against carol, not bob."""
    bob, carol = personas["bob"], personas["carol"]
    flow = scale_after("scaleafter")
    run = started(flow, bob, django_capture_on_commit_callbacks)
    assert run.status == "failed"
    for perm, obj in (("workflows.view_workflowdefinition", flow), ("workflows.run_workflowdefinition", flow),
                      ("workflows.view_workflowrun", run), ("workflows.retry_workflowrun", run)):
        assign_perm(perm, carol, obj)
    with django_capture_on_commit_callbacks(execute=True):
        resp = api(clients["carol"], "POST", f"/mgmt/workflows/{run.pk}/retry")
    assert resp.status_code == 200, resp.content
    assert resp.json()["actingAs"] == "carol" and resp.json()["actor"] == "bob"
    run = drain(run)
    assert run.status == "failed"
    assert StepRun.objects.get(run=run, name="up").error == "carol may not scale HMS-SVC"
    assert Service.objects.get(name="HMS-SVC").desired_instances == 0
    entry = AuditEntry.objects.filter(action=events.WORKFLOW_RETRY).latest("id")
    assert entry.actor == "carol" and entry.outcome == AuditEntry.Outcome.SUCCESS
    assert entry.payload[events.STARTED_BY] == "bob" and entry.payload[events.RETRIED_BY] == "carol"


def test_a_retrier_with_the_rights_lends_them_to_the_steps(personas, demo, django_capture_on_commit_callbacks) -> None:
    """The other way round: carol's run cannot scale; bob's retry scales, audited as bob."""
    carol, bob = personas["carol"], personas["bob"]
    flow = scale_after("scaleafter2")
    assign_perm("workflows.view_workflowdefinition", carol, flow)
    assign_perm("workflows.run_workflowdefinition", carol, flow)
    run = started(flow, carol, django_capture_on_commit_callbacks)
    assert run.status == "failed"
    with django_capture_on_commit_callbacks(execute=True):
        outcome = actions.retry_run(run, actor=bob)
    assert outcome.refused is None and outcome.decision.allowed
    assert drain(run).status == "succeeded"
    assert AuditEntry.objects.filter(action="scale").latest("id").actor == "bob"


def test_the_retriers_freeze_exemption_decides(personas, django_capture_on_commit_callbacks) -> None:
    """A change freeze exempts operators: carol's failed run is retried by bob (exempt), allowed;
    carol herself is refused. The quota would still count the run against carol."""
    carol, bob = personas["carol"], personas["bob"]
    flow = failing("frozen")
    assign_perm("workflows.view_workflowdefinition", carol, flow)
    assign_perm("workflows.run_workflowdefinition", carol, flow)
    run = started(flow, carol, django_capture_on_commit_callbacks)
    now = timezone.now()
    Policy.objects.create(name="freeze", kind=Policy.Kind.CHANGE_FREEZE, freeze_start=now - timedelta(hours=1),
                          freeze_end=now + timedelta(hours=1), exempt_group=Group.objects.get(name="operators"))
    refused = actions.retry_run(run, actor=carol)
    assert not refused.decision.allowed and refused.decision.kind == "change_freeze"
    with django_capture_on_commit_callbacks(execute=True):
        allowed = actions.retry_run(run, actor=bob)
    assert allowed.decision.allowed, allowed.decision.detail
    run.refresh_from_db()
    assert run.acting_user == bob and run.actor == carol
