"""scale_service decides on the state the caller read and applies it only if the row still holds
it; a stale read (someone scaled in between) is decided again on the locked row."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEntry
from fleet import actions
from fleet.models import Service
from policies.models import Policy

pytestmark = pytest.mark.django_db


def test_a_stale_read_is_decided_again_on_the_current_row(demo, personas):
    stale = Service.objects.get(name="HMS-SVC")
    assert stale.desired_instances == 0
    actions.scale_service(Service.objects.get(pk=stale.pk), 2, actor=personas["alice"])
    Policy.objects.create(name="one step", kind=Policy.Kind.SCALING_RATE, max_step=1)

    # Judged on the stale read, 0 -> 3 breaks the one-step rule; on the row it is 2 -> 3.
    outcome = actions.scale_service(stale, 3, actor=personas["alice"])

    assert outcome.applied and outcome.previous == 2
    assert Service.objects.get(pk=stale.pk).desired_instances == 3
    entry = AuditEntry.objects.filter(action="scale").order_by("-pk").first()
    assert entry.outcome == AuditEntry.Outcome.SUCCESS and entry.payload == {"from": 2, "to": 3}


def test_a_stale_read_cannot_overwrite_a_concurrent_scale(demo, personas):
    stale = Service.objects.get(name="HMS-SVC")
    before = AuditEntry.objects.filter(action="scale").count()
    actions.scale_service(Service.objects.get(pk=stale.pk), 4, actor=personas["bob"])
    Policy.objects.create(name="at most 4", kind=Policy.Kind.INSTANCE_BOUNDS, max_instances=4)

    outcome = actions.scale_service(stale, 5, actor=personas["alice"])

    assert not outcome.applied and outcome.previous == 4
    assert Service.objects.get(pk=stale.pk).desired_instances == 4
    entry = AuditEntry.objects.filter(action="scale").order_by("-pk").first()
    assert entry.outcome == AuditEntry.Outcome.DENIED and entry.payload["from"] == 4
    assert AuditEntry.objects.filter(action="scale").count() == before + 2  # one per call, refusal included


def test_a_cooldown_is_judged_on_the_current_last_scaling_time(demo, personas):
    Service.objects.filter(name="HMS-SVC").update(last_scaled_at=timezone.now() - timedelta(hours=1))
    stale = Service.objects.get(name="HMS-SVC")
    actions.scale_service(Service.objects.get(pk=stale.pk), 0, actor=personas["bob"])  # same count, new time
    Policy.objects.create(name="cool", kind=Policy.Kind.SCALING_RATE, cooldown_seconds=60)

    # On the stale read the last scale was an hour ago; on the row it was just now.
    outcome = actions.scale_service(stale, 1, actor=personas["alice"])

    assert not outcome.applied and outcome.decision.kind == Policy.Kind.SCALING_RATE
    assert Service.objects.get(pk=stale.pk).desired_instances == 0


def test_concurrent_re_asserts_of_one_count_need_no_locked_pass(demo, personas, django_assert_max_num_queries):
    svc = Service.objects.get(name="HMS-SVC")
    actions.scale_service(Service.objects.get(pk=svc.pk), 0, actor=personas["bob"])  # moves last_scaled_at
    # No cooldown judged: the stale time does not matter, the optimistic UPDATE applies.
    with django_assert_max_num_queries(6):  # policies, update, audit insert (+ savepoint/transaction)
        outcome = actions.scale_service(svc, 0, actor=personas["alice"])
    assert outcome.applied and outcome.previous == 0
