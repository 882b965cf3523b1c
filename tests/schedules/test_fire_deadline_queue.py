"""A schedule's deadline reaches the runs it starts (and is validated as a flow's is), and a fire
into a "when full: queue" quota is a queued run the schedule knows about, not a refusal."""

from __future__ import annotations

from datetime import timedelta

import pytest

from audit import events
from audit.models import AuditEntry
from policies import actions as policy_actions
from policies.models import Policy
from schedules import actions
from schedules.cadence import Invalid
from schedules.models import Schedule, ScheduleFire
from tests.schedules.conftest import at
from workflows.models import WorkflowDefinition, WorkflowRun

pytestmark = pytest.mark.django_db
GRACE = timedelta(seconds=2)


def make(flow, owner, **fields) -> Schedule:  # type: ignore[no-untyped-def]
    s = actions.create_schedule(flow, {"interval_seconds": 1, "overlap_policy": "allow", **fields}, owner=owner,
                                actor=owner)
    Schedule.objects.filter(pk=s.pk).update(next_fire_at=at(0))
    s.refresh_from_db()
    return s


def test_the_schedules_deadline_is_the_runs(flow, personas) -> None:
    s = make(flow, personas["alice"], deadline={"within_seconds": 1800})
    actions.fire(s, at(0), now=at(0.2), grace=GRACE)
    run = WorkflowRun.objects.get()
    assert run.deadline_at == run.created_at + timedelta(seconds=1800)


def test_the_schedules_deadline_replaces_the_flows(flow, personas) -> None:
    flow.deadline = {"within_seconds": 60}
    flow.save()
    s = make(flow, personas["alice"], deadline={"by": "06:00", "tz": "Europe/Berlin"})
    actions.fire(s, at(0), now=at(0.2), grace=GRACE)
    run = WorkflowRun.objects.get()
    local = run.deadline_at.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (6, 0) and run.deadline_at > run.created_at


def test_without_its_own_deadline_a_fire_keeps_the_flows(flow, personas) -> None:
    flow.deadline = {"within_seconds": 60}
    flow.save()
    s = make(flow, personas["alice"])
    actions.fire(s, at(0), now=at(0.2), grace=GRACE)
    run = WorkflowRun.objects.get()  # the flow's, counted from start_run's own clock reading
    assert abs(run.deadline_at - (run.created_at + timedelta(seconds=60))) < timedelta(seconds=1)


@pytest.mark.parametrize("spec", [{"within_minutes": 30}, {"by": "25:00"}, {"by": "06:00", "tz": "Mars/Olympus"},
                                  {"within_seconds": 0}])
def test_a_bad_deadline_is_refused_naming_the_field(flow, personas, spec) -> None:
    with pytest.raises(Invalid) as info:
        actions.create_schedule(flow, {"cron": "0 2 * * *", "deadline": spec}, owner=personas["alice"],
                                actor=personas["alice"])
    assert info.value.field == "deadline" and "deadline" in info.value.detail


def test_a_fire_beyond_a_queueing_quota_is_a_queued_run_not_a_refusal(demo, personas) -> None:
    policy = Policy.objects.get(name="analytics jobs per user ≤ 5")
    policy.when_full, policy.limit = Policy.WhenFull.QUEUE, 1
    policy_actions.save_policy(policy, actor="system:test")
    flow = WorkflowDefinition.objects.get(slug="analyticsReport")
    s = make(flow, personas["carol"], data={"seconds": 1})
    actions.fire(s, at(0), now=at(0.1), grace=GRACE)
    s.refresh_from_db()
    actions.fire(s, at(1), now=at(1.1), grace=GRACE)
    first, second = ScheduleFire.objects.order_by("scheduled_for")
    assert first.outcome == second.outcome == "started" and first.run_id and second.run_id
    assert WorkflowRun.objects.get(pk=second.run_id).status == "queued"
    assert second.reason.startswith("queued, 1 in line")
    assert AuditEntry.objects.filter(action=events.SCHEDULE_FIRE, outcome="success").count() == 2
    s.refresh_from_db()
    assert s.last_run_id == second.run_id


def test_a_queued_run_counts_as_still_running_for_the_overlap_policy(demo, personas) -> None:
    policy = Policy.objects.get(name="analytics jobs per user ≤ 5")
    policy.when_full, policy.limit = Policy.WhenFull.QUEUE, 1
    policy_actions.save_policy(policy, actor="system:test")
    flow = WorkflowDefinition.objects.get(slug="analyticsReport")
    carol = personas["carol"]
    from workflows import actions as workflow_actions

    assert not workflow_actions.start_run(flow, {"seconds": 1}, actor=carol).queued  # carol's slot is taken
    s = make(flow, carol, overlap_policy="skip")
    actions.fire(s, at(0), now=at(0.1), grace=GRACE)
    s.refresh_from_db()
    actions.fire(s, at(1), now=at(1.1), grace=GRACE)
    first, second = ScheduleFire.objects.order_by("scheduled_for")
    assert first.outcome == "started" and WorkflowRun.objects.get(pk=first.run_id).status == "queued"
    assert second.outcome == "skipped" and str(first.run_id) in second.reason
    assert WorkflowRun.objects.filter(status="queued").count() == 1  # not one more per fire
