"""Pause/resume a run and per-step trigger rules (issue 16), in-process: the tests play the worker
by calling execute_step (test_long_steps.py and test_qcluster.py use real worker processes)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from audit import events
from audit.models import AuditEntry
from tests.conftest import api
from tests.workflows.helpers import drain, make_flow, py, statuses, step
from workflows import actions, dag, execute, sweeps
from workflows.models import StepRun, WorkflowRun

pytestmark = pytest.mark.django_db


def started(flow, who, capture) -> WorkflowRun:  # type: ignore[no-untyped-def]
    with capture(execute=True):
        run = actions.start_run(flow, {}, actor=who).run
    assert run is not None
    return run


# --- pause and resume ------------------------------------------------------------------------------
def test_a_paused_run_starts_no_step_until_resumed(personas, clients, django_capture_on_commit_callbacks) -> None:
    run = started(make_flow("p", [step("a"), step("b", "a")]), personas["bob"], django_capture_on_commit_callbacks)
    resp = api(clients["bob"], "POST", f"/mgmt/workflows/{run.pk}/pause")
    assert resp.status_code == 200, resp.content
    assert resp.json()["status"] == "paused" and resp.json()["pausedAt"]
    a = StepRun.objects.get(run=run, name="a")
    assert a.status == "pending"  # held back: its broker message finds nothing to claim
    assert execute.execute_step(a.pk) == "not claimed"
    run = drain(run)
    assert run.status == "paused" and statuses(run) == {"a": "pending", "b": "pending"}
    # Shown as paused in the lists and on the page (with the resume button).
    assert [r["status"] for r in api(clients["bob"], "GET", "/mgmt/workflows?status=paused").json()["items"]] \
        == ["paused"]
    assert 'class="badge paused"' in clients["bob"].get("/runs/?status=paused").content.decode()
    html = clients["bob"].get(f"/runs/{run.pk}/").content.decode()
    assert "Resume run" in html and "Pause run" not in html and 'id="run-paused"' in html
    with django_capture_on_commit_callbacks(execute=True):
        resp = api(clients["bob"], "POST", f"/mgmt/workflows/{run.pk}/resume")
    assert resp.status_code == 200 and resp.json()["status"] == "pending"
    assert drain(run).status == "succeeded"
    pause = AuditEntry.objects.get(action=events.WORKFLOW_PAUSE)
    assert pause.actor == "bob" and pause.payload["stepsHeld"] == 1
    assert AuditEntry.objects.filter(action=events.WORKFLOW_RESUME, actor="bob").count() == 1


def test_a_running_step_finishes_but_its_successor_waits(personas, django_capture_on_commit_callbacks) -> None:
    run = started(make_flow("p2", [step("a"), step("b", "a")]), personas["bob"], django_capture_on_commit_callbacks)
    a = execute._claim(StepRun.objects.get(run=run, name="a").pk)  # a worker holds a
    assert a is not None
    actions.pause_run(run, actor=personas["bob"])
    outcome, inline = execute._execute_one(a, budget=30)
    assert outcome == "succeeded" and inline is None  # no successor claimed inline while paused
    assert statuses(run) == {"a": "succeeded", "b": "pending"}
    run.refresh_from_db()
    assert run.status == "paused"
    with django_capture_on_commit_callbacks(execute=True):
        actions.resume_run(run, actor=personas["bob"])
    assert statuses(run)["b"] == "queued"
    assert drain(run).status == "succeeded"


def test_a_retry_waits_out_the_pause(personas, django_capture_on_commit_callbacks) -> None:
    flow = make_flow("p3", [py("a", "flaky", kwargs={"fail_attempts": 1}, retries=1, backoff=0)])
    run = started(flow, personas["bob"], django_capture_on_commit_callbacks)
    execute.execute_step(StepRun.objects.get(run=run, name="a").pk)
    assert statuses(run) == {"a": "retrying"}
    actions.pause_run(run, actor=personas["bob"])
    assert sweeps.promote_due_retries() == 0 and statuses(run) == {"a": "retrying"}
    actions.resume_run(run, actor=personas["bob"])
    assert drain(run).status == "succeeded"


def test_pause_and_resume_refuse_what_does_not_apply(personas, clients, django_capture_on_commit_callbacks) -> None:
    run = started(make_flow("p4", [step("a")]), personas["bob"], django_capture_on_commit_callbacks)
    url = f"/mgmt/workflows/{run.pk}"
    resp = api(clients["bob"], "POST", f"{url}/resume")
    assert resp.status_code == 409 and resp.json()["error"] == "not_paused"
    assert api(clients["bob"], "POST", f"{url}/pause").status_code == 200
    resp = api(clients["bob"], "POST", f"{url}/pause")
    assert resp.status_code == 409 and resp.json()["error"] == "already_paused"
    assert api(clients["dave"], "POST", f"{url}/pause").status_code == 404
    # A paused run can be cancelled (it is still active).
    assert api(clients["bob"], "POST", f"{url}/cancel").status_code == 200
    for op in ("pause", "resume"):
        resp = api(clients["bob"], "POST", f"{url}/{op}")
        assert resp.status_code == 409 and resp.json()["error"] == "not_active", resp.content
    assert AuditEntry.objects.filter(action=events.WORKFLOW_PAUSE).count() == 1


def test_pause_buttons_on_the_run_page(personas, clients, django_capture_on_commit_callbacks) -> None:
    run = started(make_flow("p5", [step("a")]), personas["bob"], django_capture_on_commit_callbacks)
    assert "Pause run" in clients["bob"].get(f"/runs/{run.pk}/").content.decode()
    resp = clients["bob"].post(f"/runs/{run.pk}/pause/", follow=True)
    assert f"Run {run.pk} paused" in resp.content.decode()
    run.refresh_from_db()
    assert run.status == "paused"
    with django_capture_on_commit_callbacks(execute=True):
        clients["bob"].post(f"/runs/{run.pk}/resume/")
    assert drain(run).status == "succeeded"


# --- trigger rules ---------------------------------------------------------------------------------
def test_dependency_state_by_rule() -> None:
    st = {"ok": ("succeeded", False), "bad": ("failed", False), "run": ("running", False), "sk": ("skipped", False)}
    assert dag.dependency_state(["ok", "bad"], st, "all_done") == dag.SATISFIED
    assert dag.dependency_state(["ok", "run"], st, "all_done") == dag.WAIT
    assert dag.dependency_state(["bad", "run"], st, "one_failed") == dag.SATISFIED  # at once, not at the end
    assert dag.dependency_state(["ok", "run"], st, "one_failed") == dag.WAIT
    assert dag.dependency_state(["ok", "sk"], st, "one_failed") == dag.BLOCKED
    assert dag.dependency_state(["ok", "bad"], st) == dag.BLOCKED
    assert dag.is_required(False, "all_success") and not dag.is_required(False, "all_done")


def rules_flow(slug: str, first: dict) -> object:
    return make_flow(slug, [first, step("slow", action="noop"),
                            step("b", "a"),
                            step("cleanup", "a", "b", trigger_rule="all_done"),
                            step("alert", "a", "slow", trigger_rule="one_failed")])


def test_a_failure_runs_cleanup_and_alert_and_still_fails_the_run(personas,
                                                                   django_capture_on_commit_callbacks) -> None:
    run = started(rules_flow("tr1", py("a", "fail")), personas["bob"], django_capture_on_commit_callbacks)
    execute.execute_step(StepRun.objects.get(run=run, name="a").pk)
    # one_failed fires as soon as a failed, while slow has not even run yet.
    assert statuses(run)["alert"] == "queued" and statuses(run)["slow"] == "queued"
    run = drain(run)
    assert statuses(run) == {"a": "failed", "slow": "succeeded", "b": "skipped", "cleanup": "succeeded",
                             "alert": "succeeded"}
    assert run.status == "failed" and run.error.startswith("step a failed")


def test_a_success_skips_the_alert_and_succeeds(personas, django_capture_on_commit_callbacks) -> None:
    run = drain(started(rules_flow("tr2", step("a")), personas["bob"], django_capture_on_commit_callbacks))
    assert statuses(run) == {"a": "succeeded", "slow": "succeeded", "b": "succeeded", "cleanup": "succeeded",
                             "alert": "skipped"}
    assert StepRun.objects.get(run=run, name="alert").error == "trigger rule one_failed: no dependency failed"
    assert run.status == "succeeded"  # the alert step is not required


def test_a_failing_cleanup_does_not_fail_the_run(personas, django_capture_on_commit_callbacks) -> None:
    flow = make_flow("tr3", [step("a"), py("cleanup", "fail", "a", trigger_rule="all_done")])
    run = drain(started(flow, personas["bob"], django_capture_on_commit_callbacks))
    assert statuses(run) == {"a": "succeeded", "cleanup": "failed"} and run.status == "succeeded"


@pytest.mark.parametrize(("rule_step", "message"), [
    (step("x", "a", trigger_rule="sometimes"), "step 'x': unknown trigger_rule 'sometimes' (known: all_success"),
    (step("x", trigger_rule="all_done"), "step 'x': trigger_rule all_done needs depends_on"),
])
def test_unknown_trigger_rules_are_refused_naming_the_step(rule_step, message) -> None:
    with pytest.raises(ValidationError) as err:
        make_flow("badrule", [step("a"), rule_step])
    assert message in " ".join(err.value.message_dict["steps"])


def test_the_api_shows_each_steps_rule(personas, clients, django_capture_on_commit_callbacks) -> None:
    run = started(rules_flow("tr4", step("a")), personas["bob"], django_capture_on_commit_callbacks)
    body = api(clients["bob"], "GET", f"/mgmt/workflows/{run.pk}").json()
    assert {s["name"]: s["triggerRule"] for s in body["steps"]}["alert"] == "one_failed"
