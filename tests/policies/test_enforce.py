"""enforce(): unit cases with the numbers in the reasons, and a Hypothesis test against a simple
reference model of the four kinds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.models import Service
from policies.enforce import enforce
from policies.models import Policy
from workflows.models import WorkflowDefinition, WorkflowRun


def _sid(name: str) -> int:
    return Service.objects.get(name=name).pk


pytestmark = pytest.mark.django_db


def _runs(flow: WorkflowDefinition, user: User | None, n: int, status: str = WorkflowRun.Status.RUNNING) -> None:
    WorkflowRun.objects.bulk_create([
        WorkflowRun(definition=flow, flow_slug=flow.slug, tag_list="," + ",".join(flow.tags) + ",",
                    actor=user, status=status) for _ in range(n)
    ])


def test_quota_reason_has_the_numbers(personas, demo) -> None:
    carol, flow = personas["carol"], WorkflowDefinition.objects.get(slug="analyticsReport")
    _runs(flow, carol, 5)
    d = enforce(carol, "run", flow, flow=flow.slug, tags=flow.tags)
    assert not d.allowed and d.status == 429
    assert d.detail == "5 of 5 analytics runs already active for carol."
    assert (d.limit, d.current, d.policy) == (5, 5, "analytics jobs per user ≤ 5")
    assert d.as_dict()["policies"] == ["analytics jobs per user ≤ 5"]


def test_finished_failed_cancelled_runs_free_their_slot(personas, demo) -> None:
    carol, flow = personas["carol"], WorkflowDefinition.objects.get(slug="analyticsReport")
    _runs(flow, carol, 4)
    for status in (WorkflowRun.Status.SUCCEEDED, WorkflowRun.Status.FAILED, WorkflowRun.Status.CANCELLED):
        _runs(flow, carol, 3, status)
    assert enforce(carol, "run", flow, flow=flow.slug, tags=flow.tags).allowed
    _runs(flow, carol, 1, WorkflowRun.Status.PENDING)  # pending holds a slot too
    assert not enforce(carol, "run", flow, flow=flow.slug, tags=flow.tags).allowed


def test_quota_counts_per_user_or_in_total(personas, demo) -> None:
    carol, bob = personas["carol"], personas["bob"]
    flow = WorkflowDefinition.objects.get(slug="analyticsReport")
    _runs(flow, bob, 5)
    assert enforce(carol, "run", flow, flow=flow.slug, tags=flow.tags).allowed  # bob's runs are bob's
    Policy.objects.filter(kind=Policy.Kind.CONCURRENT_RUNS).update(per_user=False, limit=6)
    _runs(flow, carol, 1)
    d = enforce(carol, "run", flow, flow=flow.slug, tags=flow.tags)
    assert not d.allowed and d.detail == "6 of 6 analytics runs already active in total."


def test_system_actor_is_not_counted_per_user_and_is_held_by_a_freeze(personas, demo) -> None:
    flow = WorkflowDefinition.objects.get(slug="analyticsReport")
    _runs(flow, None, 9)
    assert enforce("system:scheduler", "run", flow, flow=flow.slug, tags=flow.tags).allowed
    now = timezone.now()
    Policy.objects.create(name="freeze", kind=Policy.Kind.CHANGE_FREEZE, freeze_start=now - timedelta(hours=1),
                          freeze_end=now + timedelta(hours=1), exempt_group=Group.objects.get(name="operators"))
    d = enforce("system:autoscaler", "scale", None, service="HMS-SVC", current=1, requested=2, last_scaled_at=None)
    assert not d.allowed and d.status == 409


def test_bounds_rate_and_freeze_reasons(personas) -> None:
    bob, now = personas["bob"], timezone.now()
    for name in ("HMS-SVC", "HMS-API"):
        Service.objects.create(name=name, command="x")
    Policy.objects.create(name="bounds", kind=Policy.Kind.INSTANCE_BOUNDS, service=Service.objects.get(name="HMS-SVC"),
                          min_instances=1, max_instances=4)
    Policy.objects.create(name="rate", kind=Policy.Kind.SCALING_RATE, max_step=2, cooldown_seconds=60)
    d = enforce(bob, "scale", None, service_id=_sid("HMS-SVC"), service="HMS-SVC", current=1, requested=5,
                last_scaled_at=None)
    assert (d.status, d.policy) == (422, "bounds")
    assert d.reasons == ["HMS-SVC may run at most 4 instances; 5 requested.",
                         "HMS-SVC may change by at most 2 instances per request; 1 → 5 is 4."]
    d = enforce(bob, "scale", None, service_id=_sid("HMS-SVC"), service="HMS-SVC", current=1, requested=0,
                last_scaled_at=None)
    assert d.detail == "HMS-SVC must keep at least 1 instances; 0 requested." and d.status == 422
    d = enforce(bob, "scale", None, service_id=_sid("HMS-SVC"), service="HMS-SVC", current=1, requested=2,
                last_scaled_at=now - timedelta(seconds=10))
    assert d.status == 409 and (d.limit, d.policy) == (60, "rate") and 10 <= d.current < 60
    # A bound scoped to another service does not apply; the rate policy (every service) does.
    d = enforce(bob, "scale", None, service_id=_sid("HMS-API"), service="HMS-API", current=1, requested=9,
                last_scaled_at=None)
    assert d.policy == "rate" and d.checked == ["rate"]


# --- Hypothesis: enforce against a reference model --------------------------------------------

SERVICES = ["HMS-SVC", "HMS-API"]


@dataclass
class P:
    kind: str
    service: str = ""
    lo: int | None = None
    hi: int | None = None
    step: int | None = None
    cooldown: int | None = None
    freeze: tuple[int, int] | None = None  # hours relative to now
    applies: str = "both"
    exempt: str | None = None
    flow: str = ""
    tag: str = ""
    per_user: bool = True
    limit: int | None = None
    enabled: bool = True


opt_n = st.none() | st.integers(0, 8)
policy_st = st.one_of(
    st.builds(P, kind=st.just("instance_bounds"), service=st.sampled_from(["", *SERVICES]), lo=opt_n, hi=opt_n,
              enabled=st.booleans()).filter(lambda p: (p.lo is not None or p.hi is not None)
                                            and (p.lo is None or p.hi is None or p.lo <= p.hi)),
    # Cooldowns end in 5 and elapsed times are multiples of 10: no ties at the boundary second.
    st.builds(P, kind=st.just("scaling_rate"), service=st.sampled_from(["", *SERVICES]),
              step=st.none() | st.integers(1, 4), cooldown=st.none() | st.sampled_from([5, 45, 125]),
              enabled=st.booleans()).filter(lambda p: p.step is not None or p.cooldown is not None),
    st.builds(P, kind=st.just("change_freeze"), freeze=st.sampled_from([(-2, -1), (-1, 1), (1, 2)]),
              applies=st.sampled_from(["scale", "runs", "both"]),
              exempt=st.sampled_from([None, "operators", "analysts"]), enabled=st.booleans()),
    st.builds(P, kind=st.just("concurrent_runs"), flow=st.sampled_from(["", "analyticsReport", "exportPatientData"]),
              tag=st.sampled_from(["", "analytics", "export"]), per_user=st.booleans(),
              limit=st.integers(1, 4), enabled=st.booleans()).filter(lambda p: bool(p.flow) != bool(p.tag)),
)

request_st = st.one_of(
    st.tuples(st.just("scale"), st.sampled_from(SERVICES), st.integers(0, 8), st.integers(0, 8),
              st.none() | st.sampled_from([0, 10, 40, 120, 600])),
    st.tuples(st.just("run"), st.sampled_from(["analyticsReport", "exportPatientData"]), st.integers(0, 5),
              st.integers(0, 5), st.none()),
)


def model(policies: list[tuple[str, P]], actor_groups: set[str], req: tuple) -> tuple[bool, int, list[str]]:
    """The rules as the issue states them, written as plainly as possible."""
    action, target, a, b, elapsed = req
    denials: list[tuple[str, int]] = []
    for name, p in sorted(policies, key=lambda np: (np[1].kind, np[0])):
        if not p.enabled:
            continue
        if p.kind == "change_freeze":
            applies = p.applies == "both" or (p.applies == "scale") == (action == "scale")
            active = p.freeze[0] <= 0 < p.freeze[1]
            if applies and active and p.exempt not in actor_groups:
                denials.append((name, 409))
        elif action == "scale" and p.kind in ("instance_bounds", "scaling_rate"):
            if p.service and p.service != target:
                continue
            current, requested = a, b
            if p.kind == "instance_bounds":
                if (p.hi is not None and requested > p.hi) or (p.lo is not None and requested < p.lo):
                    denials.append((name, 422))
            else:
                if p.step is not None and abs(requested - current) > p.step:
                    denials.append((name, 422))
                if p.cooldown and elapsed is not None and requested != current and elapsed < p.cooldown:
                    denials.append((name, 409))
        elif action == "run" and p.kind == "concurrent_runs":
            tags = {"analyticsReport": ["analytics"], "exportPatientData": ["export"]}[target]
            if p.flow == target or (p.tag and p.tag in tags):
                mine, others = a, b
                count = mine if p.per_user else mine + others
                if count >= p.limit:
                    denials.append((name, 429))
    names = list(dict.fromkeys(n for n, _ in denials))
    return (not denials, denials[0][1] if denials else 200, names)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(policies=st.lists(policy_st, max_size=4), req=request_st)
def test_enforce_matches_the_reference_model(personas, demo, policies: list[P], req: tuple) -> None:
    Policy.objects.all().delete()
    WorkflowRun.objects.all().delete()
    carol, bob = personas["carol"], personas["bob"]
    now = timezone.now()
    named = [(f"p{i}", p) for i, p in enumerate(policies)]
    groups = {g.name: g for g in Group.objects.all()}
    for name, p in named:
        Policy.objects.create(
            name=name, kind=p.kind, enabled=p.enabled,
            service=Service.objects.get(name=p.service) if p.service else None, min_instances=p.lo,
            max_instances=p.hi, max_step=p.step, cooldown_seconds=p.cooldown,
            freeze_start=now + timedelta(hours=p.freeze[0]) if p.freeze else None,
            freeze_end=now + timedelta(hours=p.freeze[1]) if p.freeze else None, applies_to=p.applies,
            exempt_group=groups[p.exempt] if p.exempt else None, scope_flow=p.flow, scope_tag=p.tag,
            per_user=p.per_user, limit=p.limit)
    action, target, a, b, elapsed = req
    if action == "scale":
        last = now - timedelta(seconds=elapsed) if elapsed is not None else None
        d = enforce(carol, "scale", None, service_id=_sid(target), service=target, current=a, requested=b,
                    last_scaled_at=last)
    else:
        flow = WorkflowDefinition.objects.get(slug=target)
        _runs(flow, carol, a)
        _runs(flow, bob, b)
        d = enforce(carol, "run", flow, flow=flow.slug, tags=flow.tags)
    allowed, status, names = model(named, {"analysts"}, req)
    assert (d.allowed, d.status if not d.allowed else 200, d.denied_by) == (allowed, status, names)
    assert len(d.reasons) >= len(names) and all(r for r in d.reasons)



@pytest.mark.django_db(transaction=True)
def test_lock_outside_a_transaction_is_refused(personas, demo) -> None:
    from django.db import transaction

    flow = WorkflowDefinition.objects.get(slug="analyticsReport")
    with transaction.atomic():
        assert enforce(personas["carol"], "run", flow, lock=True, flow=flow.slug, tags=flow.tags).allowed
    with pytest.raises(RuntimeError, match="inside the transaction"):
        enforce(personas["carol"], "run", flow, lock=True, flow=flow.slug, tags=flow.tags)
