"""The autoscaler: the HPA formula and its clipping (pure `decide`, property-tested), and
`evaluate` against the database (decisions stored with inputs, overrides, maintenance, demand)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.models import AuditEntry
from autoscaling import autoscaler as autoscale
from autoscaling.decide import MetricInput, Policy, decide, propose
from autoscaling.models import AutoscaleDecision, ScaleOverride
from fleet import actions
from fleet.models import Service
from health import actions as health_actions
from tests.conftest import service_with

# --- the formula ----------------------------------------------------------------------------------


def test_it_scales_by_the_ratio_of_metric_to_target() -> None:
    p = propose(3, MetricInput("cpu", 140, 70))
    assert p["proposal"] == 6 and p["ratio"] == 2.0


def test_it_ignores_a_ratio_inside_the_tolerance() -> None:
    assert propose(4, MetricInput("cpu", 76, 70))["proposal"] == 4  # 8.6 % over target
    assert propose(4, MetricInput("cpu", 80, 70))["proposal"] == 5  # 14 % over: ceil(4.57)


def test_demand_is_a_total_divided_by_the_per_instance_target() -> None:
    assert propose(1, MetricInput("demand", 9, 4, per_instance=False))["proposal"] == 3
    # Demand can start a service that has no instances (CPU and latency cannot: nothing to measure).
    assert propose(0, MetricInput("demand", 1, 4, per_instance=False))["proposal"] == 1
    assert propose(0, MetricInput("cpu", 90, 70))["proposal"] is None
    # No queued steps says nothing about other clients: demand never scales down on its own.
    assert propose(3, MetricInput("demand", 0, 4, per_instance=False))["proposal"] is None


def test_the_largest_proposal_wins_and_the_rate_policy_clips_it() -> None:
    out = decide(2, [MetricInput("cpu", 35, 70), MetricInput("latency_p95", 1200, 300)],
                 Policy(1, 20, up_step=3))
    assert out.raw == 8 and out.desired == 5
    assert any("scale-up rate" in c for c in out.clipped)


def test_scale_down_waits_for_the_stabilization_window() -> None:
    policy = Policy(1, 10, down_step=5, down_window=300)
    low = [MetricInput("cpu", 10, 70)]
    held = decide(6, low, policy, history=[(120.0, 6)])
    assert held.desired == 6 and "stabilization" in held.clipped[0]
    # The high recommendation is older than the window: now it may go down (by the rate policy).
    assert decide(6, low, policy, history=[(301.0, 6)]).desired == 1


def test_a_fast_burn_adds_an_instance_when_cpu_looks_fine() -> None:
    out = decide(2, [MetricInput("cpu", 70, 70)], Policy(1, 5), fast_burn=True)
    assert out.desired == 3 and "fast burn" in out.clipped[0]


def test_low_budget_holds_scale_down() -> None:
    out = decide(4, [MetricInput("cpu", 10, 70)], Policy(1, 10, down_window=0),
                 hold_scale_down="scale-down held: 10% of the error budget left")
    assert out.desired == 4 and "held" in out.clipped[-1]


def test_bounds_are_named_when_they_clip() -> None:
    out = decide(3, [MetricInput("cpu", 700, 70)], Policy(1, 4, up_step=10))
    assert out.desired == 4 and any(c.startswith("max instances 4") for c in out.clipped)


# --- properties -------------------------------------------------------------------------------------
policies = st.builds(
    lambda lo, span, up, down, upw, downw: Policy(lo, lo + span, up, down, upw, downw),
    st.integers(0, 5), st.integers(0, 15), st.integers(1, 6), st.integers(1, 6),
    st.sampled_from([0.0, 15.0, 60.0]), st.sampled_from([0.0, 60.0, 300.0]),
)
metric_lists = st.lists(
    st.builds(MetricInput, st.sampled_from(["cpu", "latency_p95"]),
              st.one_of(st.none(), st.floats(0, 5000, allow_nan=False)), st.one_of(st.none(), st.integers(1, 500))),
    max_size=3,
)
histories = st.lists(st.tuples(st.floats(0, 600, allow_nan=False), st.integers(0, 30)), max_size=8)


@settings(max_examples=300, deadline=None)
@given(current=st.integers(0, 30), metrics=metric_lists, policy=policies, history=histories,
       burn=st.booleans(), hold=st.booleans())
def test_never_outside_min_max(current, metrics, policy, history, burn, hold) -> None:
    out = decide(current, metrics, policy, history=history, fast_burn=burn, hold_scale_down="hold" if hold else "")
    assert policy.min_instances <= out.desired <= policy.max_instances


@settings(max_examples=200, deadline=None)
@given(policy=policies, start=st.integers(0, 20), target=st.integers(10, 400),
       noise=st.lists(st.floats(-0.10, 0.10, allow_nan=False), min_size=5, max_size=40))
def test_no_flapping_under_ten_percent_noise(policy, start, target, noise) -> None:
    """A metric hovering within ±10 % of its target never changes the count."""
    current = min(max(start, policy.min_instances, 1), policy.max_instances)
    if current == 0:
        return  # max_instances == 0: nothing to scale
    history: list[tuple[float, int]] = []
    for step, e in enumerate(noise):
        out = decide(current, [MetricInput("cpu", target * (1 + e), target)], policy, history=history)
        assert out.desired == current, (step, e, out)
        history = [(age + 15, rec) for age, rec in history] + [(0.0, out.desired)]


@settings(max_examples=300, deadline=None)
@given(current=st.integers(0, 20), metrics=metric_lists, policy=policies, history=histories)
def test_respects_windows_and_rates(current, metrics, policy, history) -> None:
    out = decide(current, metrics, policy, history=history)
    inside = policy.min_instances <= current <= policy.max_instances
    if not inside:
        return  # bounds pull an out-of-range count back in first
    recent_high = [rec for age, rec in history if age <= policy.down_window]
    if out.desired < current:
        # A scale-down never goes below any recommendation still inside the window...
        assert all(out.desired >= min(rec, current) for rec in recent_high)
        # ...nor by more than the rate policy allows.
        assert current - out.desired <= policy.down_step
    if out.desired > current:
        recent_low = [rec for age, rec in history if age <= policy.up_window]
        assert all(out.desired <= max(rec, current) for rec in recent_low)
        assert out.desired - current <= policy.up_step


# --- evaluate() against the database ------------------------------------------------------------------
@pytest.fixture
def svc(db: None) -> Service:
    s = service_with("api", autoscale_enabled=True, min_instances=1, max_instances=4, target_cpu_percent=70)
    actions.scale_service(s, 2, actor="system:autoscaler")
    s.refresh_from_db()
    return s


def test_every_evaluation_is_stored_with_its_inputs_even_no_change(svc: Service) -> None:
    d = autoscale.evaluate(svc)
    assert d.summary.startswith("no change") and not d.applied
    names = [m["name"] for m in d.inputs["metrics"]]
    assert names == ["cpu", "latency_p95", "demand"]
    assert d.inputs["policy"]["max"] == 4 and d.inputs["recommendation"] == 2
    assert AutoscaleDecision.objects.filter(service=svc).count() == 1


def test_cpu_from_driver_stats_scales_up_through_scale_service(svc: Service) -> None:
    from fleet.models import Instance

    for _ in range(2):
        Instance.objects.create(service=svc, driver="process", state=Instance.State.RUNNING, cpu_percent=140.0)
    d = autoscale.evaluate(svc)
    svc.refresh_from_db()
    assert d.applied and d.desired == 4 and svc.desired_instances == 4
    assert d.inputs["metrics"][0]["proposal"] == 4
    entry = AuditEntry.objects.filter(action="scale").order_by("-id").first()
    assert entry.actor == "system:autoscaler" and "cpu=140/70" in entry.payload["reason"]


def test_a_manual_scale_becomes_an_override_until_its_ttl(svc: Service, personas) -> None:
    actions.scale_service(svc, 3, actor=personas["bob"])
    d = autoscale.evaluate(svc)
    assert d.summary.startswith("paused: manual override by bob")
    ov = ScaleOverride.objects.get(service=svc)
    assert ov.owner == "bob" and ov.instances == 3 and ov.expires_at is not None
    assert AuditEntry.objects.filter(action="autoscale.override").count() == 1
    # Once the TTL has passed the autoscaler resumes (and says so in the audit log).
    ScaleOverride.objects.filter(pk=ov.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    d = autoscale.evaluate(svc)
    assert not d.summary.startswith("paused")
    assert AuditEntry.objects.filter(action="autoscale.override_end").exists()
    assert ScaleOverride.objects.filter(cleared_at__isnull=True).count() == 0


def test_maintenance_pauses_the_autoscaler(svc: Service) -> None:
    now = timezone.now()
    health_actions.create_maintenance_window(svc, starts_at=now - timedelta(minutes=1),
                                             ends_at=now + timedelta(hours=1), reason="db upgrade", actor="system:test")
    d = autoscale.evaluate(svc)
    assert d.summary.startswith("paused: maintenance") and "db upgrade" in d.summary


def test_workflow_demand_comes_from_the_provider_workflows_registered(svc: Service) -> None:
    from workflows.models import StepRun, WorkflowDefinition, WorkflowRun

    flow = WorkflowDefinition.objects.create(slug="f", name="f", steps=[])
    run = WorkflowRun.objects.create(definition=flow, flow_slug="f")
    for i, status in enumerate(["queued", "running", "running", "succeeded", "pending"]):
        StepRun.objects.create(run=run, name=f"s{i}", action="http", params={"service": "api"}, status=status)
    StepRun.objects.create(run=run, name="other", action="http", params={"service": "x"}, status="queued")
    assert autoscale.demand_for("api") == 3
