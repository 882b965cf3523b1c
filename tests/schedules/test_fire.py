"""Firing in one process: the claim (exactly once), the overlap policies, the missed-fires policy
applied to a real schedule, a refused fire audited as denied and shown on the schedule, pruning."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.test import override_settings
from django.utils import timezone

from audit import events
from audit.models import AuditEntry
from schedules import actions, jobs
from schedules.cadence import Invalid
from schedules.models import Schedule, ScheduleFire
from tests.schedules.conftest import at
from workflows.models import WorkflowRun

pytestmark = pytest.mark.django_db
GRACE = timedelta(seconds=2)


def make(flow, owner, **fields) -> Schedule:  # type: ignore[no-untyped-def]
    s = actions.create_schedule(flow, {"interval_seconds": 1, **fields}, owner=owner, actor=owner)
    Schedule.objects.filter(pk=s.pk).update(next_fire_at=at(0))
    s.refresh_from_db()
    return s


def finish_runs() -> None:
    WorkflowRun.objects.update(status=WorkflowRun.Status.SUCCEEDED, finished_at=timezone.now())


def test_a_fire_is_claimed_once(flow, personas) -> None:
    s = make(flow, personas["alice"], overlap_policy="allow", data={"k": 1})
    first = actions.fire(s, at(0), now=at(0.3), grace=GRACE)
    again = actions.fire(s, at(0), now=at(0.3), grace=GRACE)  # a replayed pass / a second controller
    assert first.claimed and not again.claimed and again.fires == []
    assert [(f.scheduled_for, f.outcome) for f in ScheduleFire.objects.all()] == [(at(0), "started")]
    run = WorkflowRun.objects.get()
    assert run.actor == personas["alice"] and run.data == {"k": 1}
    s.refresh_from_db()
    assert s.next_fire_at == at(1) and s.last_run == run and s.last_outcome == "started"
    fire = AuditEntry.objects.get(action=events.SCHEDULE_FIRE)
    assert fire.payload["runId"] == run.pk and fire.payload["scheduleId"] == s.pk and fire.outcome == "success"
    assert AuditEntry.objects.filter(action=events.WORKFLOW_START, actor="alice").count() == 1


def test_overlap_skip(flow, personas) -> None:
    s = make(flow, personas["alice"], overlap_policy="skip")
    actions.fire(s, at(0), now=at(0.1), grace=GRACE)
    s.refresh_from_db()
    actions.fire(s, at(1), now=at(1.1), grace=GRACE)
    assert list(ScheduleFire.objects.order_by("scheduled_for").values_list("outcome", flat=True)) == [
        "started", "skipped"]
    assert WorkflowRun.objects.count() == 1
    assert AuditEntry.objects.filter(action=events.SCHEDULE_SKIP).count() == 1
    finish_runs()
    s.refresh_from_db()
    actions.fire(s, at(2), now=at(2.1), grace=GRACE)
    assert WorkflowRun.objects.count() == 2


def test_overlap_queue_holds_one_fire_until_the_run_ends(flow, personas) -> None:
    s = make(flow, personas["alice"], overlap_policy="queue")
    for i in range(3):
        s.refresh_from_db()
        actions.fire(s, at(i), now=at(i + 0.1), grace=GRACE)
    outcomes = list(ScheduleFire.objects.order_by("scheduled_for").values_list("outcome", flat=True))
    assert outcomes == ["started", "held", "skipped"]  # one fire waits; the next is coalesced
    assert WorkflowRun.objects.count() == 1
    jobs.fire_due()  # the previous run still active: the held fire stays held
    assert ScheduleFire.objects.filter(outcome="held").count() == 1
    finish_runs()
    Schedule.objects.filter(pk=s.pk).update(next_fire_at=timezone.now() + timedelta(hours=1))
    jobs.fire_due()
    held = ScheduleFire.objects.get(scheduled_for=at(1))
    assert held.outcome == "started" and held.run is not None and WorkflowRun.objects.count() == 2


def test_overlap_allow(flow, personas) -> None:
    s = make(flow, personas["alice"], overlap_policy="allow")
    for i in range(3):
        s.refresh_from_db()
        actions.fire(s, at(i), now=at(i + 0.1), grace=GRACE)
    assert WorkflowRun.objects.filter(status__in=WorkflowRun.ACTIVE).count() == 3


@pytest.mark.parametrize(("policy", "started", "missed_row"), [("skip", 2, True), ("once", 3, True),
                                                                ("each", 8, False)])
def test_missed_policies_on_a_schedule(flow, personas, policy, started, missed_row) -> None:
    """Down from second 0 to 7.5 (grace 2 s): 0..5 are missed, 6 and 7 on time."""
    s = make(flow, personas["alice"], overlap_policy="allow", missed_policy=policy, missed_bound=10)
    actions.fire(s, at(0), now=at(7.5), grace=GRACE)
    assert WorkflowRun.objects.count() == started
    assert ScheduleFire.objects.filter(outcome="missed").exists() == missed_row
    s.refresh_from_db()
    assert s.next_fire_at == at(8)


def test_refused_fire_is_audited_as_denied_and_shown(flow, personas) -> None:
    carol = personas["carol"]
    analytics = Group.objects.get(name="analysts")
    from guardian.shortcuts import assign_perm

    assign_perm("workflows.run_workflowdefinition", analytics, flow)
    assign_perm("workflows.view_workflowdefinition", analytics, flow)
    s = make(flow, carol)
    carol.groups.clear()  # her permission is revoked after she created the schedule
    s.refresh_from_db()
    actions.fire(s, at(0), now=at(0.1), grace=GRACE)
    assert WorkflowRun.objects.count() == 0
    entry = AuditEntry.objects.get(action=events.SCHEDULE_FIRE)
    assert entry.outcome == "denied" and "may no longer run" in entry.payload["reason"]
    s.refresh_from_db()
    assert s.last_outcome == "denied" and "may no longer run flow 'nightly'" in s.last_reason


def test_quota_refusal_is_a_denied_fire(demo, personas) -> None:
    from workflows.models import WorkflowDefinition

    flow = WorkflowDefinition.objects.get(slug="analyticsReport")
    carol = personas["carol"]
    s = make(flow, carol, overlap_policy="allow", data={"seconds": 1})
    for i in range(6):
        s.refresh_from_db()
        actions.fire(s, at(i), now=at(i + 0.1), grace=GRACE)
    outcomes = list(ScheduleFire.objects.order_by("scheduled_for").values_list("outcome", flat=True))
    assert outcomes == ["started"] * 5 + ["denied"]
    s.refresh_from_db()
    assert s.last_outcome == "denied" and "5" in s.last_reason
    assert AuditEntry.objects.filter(action=events.SCHEDULE_FIRE, outcome="denied").count() == 1
    assert AuditEntry.objects.filter(action=events.WORKFLOW_START, outcome="denied", actor="carol").count() == 1


def test_pause_and_resume(flow, personas) -> None:
    s = make(flow, personas["alice"])
    assert actions.set_enabled(s, False, actor=personas["alice"])
    s.refresh_from_db()
    assert s.next_fire_at is None and not actions.fire(s, at(0), now=at(0.1), grace=GRACE).claimed
    assert actions.set_enabled(s, True, actor=personas["alice"])
    s.refresh_from_db()
    assert s.next_fire_at > timezone.now() - timedelta(seconds=1)
    assert [e.action for e in AuditEntry.objects.filter(action__startswith="schedule.").order_by("id")] == [
        events.SCHEDULE_CREATE, events.SCHEDULE_PAUSE, events.SCHEDULE_RESUME]


@pytest.mark.parametrize(("fields", "field"), [
    ({"cron": "61 * * * *"}, "cron"), ({"cron": "* * *"}, "cron"), ({"cron": "0 0 30 2 *"}, "cron"),
    ({"interval_seconds": 0}, "interval"), ({"interval_seconds": 1, "timezone": "Mars/Olympus"}, "timezone"),
    ({"interval_seconds": 1, "timezone": "../../etc/passwd"}, "timezone"),
    ({"cron": "* * * * *", "interval_seconds": 5}, "cron"), ({}, "cron"),
    ({"interval_seconds": 1, "missed_policy": "sometimes"}, "missed_policy"),
    ({"interval_seconds": 1, "missed_bound": 0}, "missed_bound"),
    ({"interval_seconds": 1, "data": [1]}, "data"),
])
def test_invalid_specs_name_the_field(flow, personas, fields, field) -> None:
    with pytest.raises(Invalid) as info:
        actions.create_schedule(flow, fields, owner=personas["alice"], actor=personas["alice"])
    assert info.value.field == field
    assert not Schedule.objects.exists()


def test_only_an_admin_names_another_owner(flow, personas) -> None:
    with pytest.raises(Invalid) as info:
        actions.create_schedule(flow, {"interval_seconds": 5}, owner=personas["alice"], actor=personas["bob"])
    assert info.value.field == "owner"
    with pytest.raises(Invalid):  # dave may not run the flow: he cannot own its schedule
        actions.create_schedule(flow, {"interval_seconds": 5}, owner=personas["dave"], actor=personas["alice"])
    s = actions.create_schedule(flow, {"interval_seconds": 5}, owner=personas["bob"], actor=personas["alice"])
    assert s.owner == personas["bob"]


@override_settings(HMS_SCHEDULE_FIRES_KEPT=10)
def test_prune_keeps_the_newest(flow, personas) -> None:
    s = make(flow, personas["alice"], overlap_policy="skip")
    now = timezone.now()
    ScheduleFire.objects.bulk_create([ScheduleFire(schedule=s, scheduled_for=at(i), fired_at=now, outcome="skipped")
                                      for i in range(25)])
    assert jobs.prune() == 15
    assert sorted(ScheduleFire.objects.values_list("scheduled_for", flat=True)) == [at(i) for i in range(15, 25)]
