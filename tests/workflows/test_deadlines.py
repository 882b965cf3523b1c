"""Run deadlines: the flow says when its runs must have finished (relative or wall-clock in a time
zone); a run still unfinished then opens a "deadline" incident whose alert reaches the SLA alert
channels (a real webhook server on 127.0.0.1), resolved when the run finishes; the run page says so."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from audit.models import AuditEntry
from slo import actions as slo_actions
from slo import alerts
from slo.models import AlertChannel, AlertDelivery, Incident
from tests.conftest import api, wait_for
from tests.slo.test_sla import Hook
from tests.workflows.helpers import make_flow, step
from workflows import actions, sweeps
from workflows.deadlines import compute_deadline, describe, validate_deadline
from workflows.models import WorkflowDefinition, WorkflowRun

BERLIN = "Europe/Berlin"


# --- computing a deadline (pure) -------------------------------------------------------------------
def test_a_relative_deadline_counts_from_the_start() -> None:
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert compute_deadline({"within_seconds": 1800}, start) == datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    assert compute_deadline(None, start) is None


@pytest.mark.parametrize(("start", "expected"), [
    # Winter (CET, UTC+1): 06:00 Berlin is 05:00 UTC; started 04:59 UTC → that same morning.
    (datetime(2026, 1, 15, 4, 59, tzinfo=UTC), datetime(2026, 1, 15, 5, 0, tzinfo=UTC)),
    # Started just after: the next morning.
    (datetime(2026, 1, 15, 5, 1, tzinfo=UTC), datetime(2026, 1, 16, 5, 0, tzinfo=UTC)),
    # Summer (CEST, UTC+2): 06:00 Berlin is 04:00 UTC.
    (datetime(2026, 7, 1, 22, 0, tzinfo=UTC), datetime(2026, 7, 2, 4, 0, tzinfo=UTC)),
    # Across the spring change (29 March 2026): the night before is CET, the morning CEST.
    (datetime(2026, 3, 28, 23, 0, tzinfo=UTC), datetime(2026, 3, 29, 4, 0, tzinfo=UTC)),
])
def test_a_wall_clock_deadline_is_the_next_such_instant_in_its_zone(start: datetime, expected: datetime) -> None:
    assert compute_deadline({"by": "06:00", "tz": BERLIN}, start) == expected


@pytest.mark.parametrize(("spec", "problem"), [
    ("06:00", "is an object"),
    ({"within_seconds": 0}, "between 1 and"),
    ({"within_seconds": "30"}, "must be a number"),
    ({"within_seconds": True}, "must be a number"),
    ({"within_seconds": float("nan")}, "must be a number"),
    ({"by": "6am", "tz": BERLIN}, 'time of day "HH:MM"'),
    ({"by": "24:00"}, 'time of day "HH:MM"'),
    ({"by": "06:00", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"by": "06:00", "within_seconds": 5}, 'either "within_seconds" or "by"'),
    ({}, "got keys none"),
])
def test_bad_deadlines_are_refused_naming_the_problem(spec: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        validate_deadline(spec)


def test_deadlines_in_words() -> None:
    assert describe({"within_seconds": 1800}) == "within 30 min of the start"
    assert describe({"within_seconds": 7200}) == "within 2 h of the start"
    assert describe({"by": "06:00", "tz": BERLIN}) == "by 06:00 Europe/Berlin"


# --- on the flow: flow file, admin, the run ---------------------------------------------------------
@pytest.mark.django_db
def test_load_flows_takes_a_deadline_and_refuses_a_bad_one(tmp_path: Path) -> None:
    f = tmp_path / "nightly.yaml"
    f.write_text("slug: nightly\nname: Nightly\ndeadline: {by: '06:00', tz: Europe/Berlin}\n"
                 "steps:\n  - {name: a, action: noop}\n")
    call_command("load_flows", str(f))
    assert WorkflowDefinition.objects.get(slug="nightly").deadline == {"by": "06:00", "tz": BERLIN}
    f.write_text("slug: nightly\nname: Nightly\ndeadline: {by: '6 am'}\nsteps:\n  - {name: a, action: noop}\n")
    with pytest.raises(CommandError, match=r"flow 'nightly'.*deadline.*HH:MM"):
        call_command("load_flows", str(f))
    assert WorkflowDefinition.objects.get(slug="nightly").deadline == {"by": "06:00", "tz": BERLIN}


@pytest.mark.django_db
def test_the_model_refuses_a_bad_deadline() -> None:
    flow = WorkflowDefinition(slug="x", name="x", steps=[step("a")], deadline={"within_seconds": -5})
    with pytest.raises(ValidationError) as exc:
        flow.full_clean()
    assert "deadline" in exc.value.message_dict


@pytest.mark.django_db
def test_the_flow_admin_edits_the_deadline(clients) -> None:
    flow = make_flow("edited", [step("a")])
    page = clients["alice"].get(f"/admin/workflows/workflowdefinition/{flow.pk}/change/").content.decode()
    assert 'name="deadline"' in page
    resp = clients["alice"].post(f"/admin/workflows/workflowdefinition/{flow.pk}/change/", {
        "slug": "edited", "name": "edited", "description": "", "tags": "[]", "steps": json.dumps(flow.steps),
        "deadline": '{"within_seconds": 600}', "enabled": "on"})
    assert resp.status_code == 302, resp.content.decode()[:3000]
    flow.refresh_from_db()
    assert flow.deadline == {"within_seconds": 600}
    assert AuditEntry.objects.filter(action="flow.update", target_id=str(flow.pk)).exists()


@pytest.mark.django_db
def test_a_run_carries_its_deadline(personas) -> None:
    flow = make_flow("timed", [step("a")])
    flow.deadline = {"within_seconds": 1800}
    flow.save()
    before = timezone.now()
    run = actions.start_run(flow, {}, actor=personas["bob"]).run
    assert before + timedelta(seconds=1800) <= run.deadline_at <= timezone.now() + timedelta(seconds=1800)
    no_deadline = actions.start_run(make_flow("untimed", [step("a")]), {}, actor=personas["bob"]).run
    assert no_deadline.deadline_at is None


# --- a missed deadline: incident, alert, resolution ---------------------------------------------------
@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


@pytest.mark.django_db
@override_settings(HMS_OUTBOUND_ALLOW="127.0.0.1")  # the private-address guard's allowlist (when present)
def test_a_missed_deadline_opens_an_incident_alerts_and_resolves_when_the_run_finishes(
        personas, clients, hook: Hook, django_capture_on_commit_callbacks) -> None:
    slo_actions.save_alert_channel(AlertChannel(name="ops", kind="webhook", target=hook.url), actor="system:test")
    flow = make_flow("nightly", [step("a", action="approval")])
    flow.deadline = {"within_seconds": 60}
    flow.save()
    run = actions.start_run(flow, {}, actor=personas["bob"]).run
    on_time = actions.start_run(flow, {}, actor=personas["bob"]).run
    assert sweeps.sweep_deadlines() == {"missed": 0, "resolved": 0}  # not yet
    WorkflowRun.objects.filter(pk=run.pk).update(deadline_at=timezone.now() - timedelta(seconds=5))

    assert sweeps.sweep_deadlines() == {"missed": 1, "resolved": 0}
    assert sweeps.sweep_deadlines() == {"missed": 0, "resolved": 0}  # once
    run.refresh_from_db()
    inc = Incident.objects.get()
    assert run.deadline_incident_id == inc.pk and inc.kind == "deadline" and inc.service is None
    assert (inc.flow_slug, inc.run_id, inc.status, inc.severity) == ("nightly", run.pk, "open", "page")
    assert inc.title == f"Run {run.pk} of nightly missed its deadline (within 1 min of the start): still pending"
    assert inc.evidence["lateSeconds"] >= 5 and inc.evidence["deadline"] == {"within_seconds": 60}
    entry = AuditEntry.objects.get(action="workflow.deadline_missed")
    assert entry.target_id == str(run.pk) and entry.payload["incident"] == inc.pk
    assert AuditEntry.objects.filter(action="incident.open", actor="system:controller").count() == 1

    (opened,) = AlertDelivery.objects.filter(incident=inc)
    assert alerts.deliver(opened.pk) == "sent"
    assert hook.received[0]["event"] == "opened" and hook.received[0]["kind"] == "deadline"
    assert hook.received[0]["flowId"] == "nightly" and hook.received[0]["runId"] == run.pk
    assert hook.received[0]["service"] is None

    page = clients["bob"].get(f"/runs/{run.pk}/").content.decode()
    assert 'id="run-deadline"' in page and 'data-missed="true"' in page and f"incident #{inc.pk} open" in page
    assert 'data-missed="false"' in clients["bob"].get(f"/runs/{on_time.pk}/").content.decode()
    body = api(clients["bob"], "get", f"/mgmt/workflows/{run.pk}").json()
    assert body["deadlineIncident"] == inc.pk and body["deadlineAt"]

    assert actions.cancel_run(run, actor=personas["bob"])  # the run finishes (cancelled counts)
    assert sweeps.sweep_deadlines() == {"missed": 0, "resolved": 1}
    inc.refresh_from_db()
    assert inc.status == "resolved"
    resolved = AlertDelivery.objects.get(incident=inc, event="resolved")
    assert alerts.deliver(resolved.pk) == "sent"
    assert [h["event"] for h in hook.received] == ["opened", "resolved"]
    assert sweeps.sweep_deadlines() == {"missed": 0, "resolved": 0}
    # Alertmanager sees it labelled by flow and run, not by a service.
    (am,) = alerts.alertmanager_alerts(inc, now=timezone.now())
    assert am["labels"]["flow"] == "nightly" and am["labels"]["run"] == str(run.pk) and "endsAt" in am


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_real_controller_and_workers_alert_a_missed_deadline(transactional_db: None, personas, demo, spawn,
                                                               hook: Hook) -> None:
    """End to end: the controller's monitor notices the missed deadline of a run the workers are
    still running, the alert workers post it to the webhook; once the run finishes, the
    resolution follows."""
    slo_actions.save_alert_channel(AlertChannel(name="ops", kind="webhook", target=hook.url), actor="system:test")
    flow = make_flow("slowNightly", [step("crunch", action="sleep", params={"seconds": 6}, timeout=60)])
    flow.deadline = {"within_seconds": 2}
    flow.save()
    env = {"HMS_CONTROLLER_TICK_MS": "300", "HMS_OUTBOUND_ALLOW": "127.0.0.1"}
    spawn("controller", **env)
    spawn("qcluster", HMS_Q_WORKERS="1", **env)
    spawn("qcluster", Q_CLUSTER_NAME="alerts", **env)
    run = actions.start_run(flow, {}, actor=personas["bob"]).run
    wait_for(lambda: hook.received, timeout=60, interval=0.2, message="the deadline alert at the webhook")
    first = hook.received[0]
    assert first["event"] == "opened" and first["kind"] == "deadline" and first["runId"] == run.pk
    run.refresh_from_db()
    assert run.status in WorkflowRun.UNFINISHED  # alerted while it still ran
    wait_for(lambda: len(hook.received) >= 2, timeout=60, interval=0.2, message="the resolution at the webhook")
    assert hook.received[1]["event"] == "resolved" and hook.received[1]["runId"] == run.pk
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert Incident.objects.get(run_id=run.pk).status == "resolved"
