"""Where the autoscaler follows the Kubernetes HPA beyond the formula: no scale-down while a metric
cannot be read, instances without a figure damp a change (never cause one), and no scale-down
within the stabilization window of the autoscaler being enabled. Pure `decide`/`propose` first
(examples and properties), then `evaluate` against the database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.models import AuditEntry
from autoscaling import autoscaler as autoscale
from autoscaling.decide import MetricInput, Policy, decide, propose
from autoscaling.models import AutoscaleSettings
from console.actions import update_service_settings
from fleet import actions
from fleet.models import Instance, Service
from health.models import ProbeResult
from tests.conftest import service_with

LOW_CPU = MetricInput("cpu", 10, 70)


# --- a metric that cannot be read ---------------------------------------------------------------------
@pytest.mark.parametrize("missing", [
    MetricInput("latency_p95", None, 300),  # no probes in the window
    MetricInput("demand", None, 4, per_instance=False),  # the demand provider failing
    MetricInput("cpu", None, 70),  # no CPU figures (with latency the low one)
])
def test_no_scale_down_while_a_metric_cannot_be_read(missing: MetricInput) -> None:
    low = [m for m in (LOW_CPU, MetricInput("latency_p95", 10, 300)) if m.name != missing.name]
    out = decide(4, [*low, missing], Policy(1, 10, down_step=4, down_window=0))
    assert out.desired == 4 and out.unavailable == [missing.name]
    assert out.clipped == [f"scale-down held: no figures for {missing.name} (no scale-down while a metric "
                           "cannot be read)"]
    # The same metrics with the missing one readable (and low) scale down.
    readable = MetricInput(missing.name, 0, missing.target, per_instance=missing.per_instance)
    assert decide(4, [*low, readable], Policy(1, 10, down_step=4, down_window=0)).desired == 1


def test_the_other_metrics_still_scale_up() -> None:
    out = decide(2, [MetricInput("cpu", 140, 70), MetricInput("latency_p95", None, 300)], Policy(1, 10))
    assert out.desired == 4 and out.unavailable == ["latency_p95"]


def test_a_metric_without_a_target_is_not_in_use_and_holds_nothing() -> None:
    out = decide(4, [LOW_CPU, MetricInput("latency_p95", None, None)], Policy(1, 10, down_window=0))
    assert out.desired == 3 and out.unavailable == []


# --- instances without a figure ---------------------------------------------------------------------
def test_instances_without_a_figure_count_at_target_for_a_scale_down() -> None:
    assert propose(4, MetricInput("cpu", 10, 70))["proposal"] == 1
    # Two of four measured at 10 %, two counted at 70 %: (2×10 + 2×70) / 4 = 40 → ceil(4 × 0.57) = 3.
    p = propose(4, MetricInput("cpu", 10, 70, missing=2))
    assert p["proposal"] == 3 and p["ratio"] == pytest.approx(0.571, abs=1e-3)
    assert "2 of 4 without a figure" in p["note"]


def test_instances_without_a_figure_count_as_idle_for_a_scale_up() -> None:
    assert propose(4, MetricInput("cpu", 140, 70))["proposal"] == 8
    assert propose(4, MetricInput("cpu", 210, 70, missing=2))["proposal"] == 6  # (2×210 + 0) / 4 = 105
    # 140 % on two of four, the others idle: exactly at target → no change.
    assert propose(4, MetricInput("cpu", 140, 70, missing=2))["proposal"] == 4
    # One measured at 100 % of four: up by its ratio, down once the others count as idle → no change.
    assert propose(4, MetricInput("cpu", 100, 70, missing=3))["proposal"] == 4


# --- just enabled -------------------------------------------------------------------------------------
def test_no_scale_down_within_the_window_of_being_enabled() -> None:
    policy = Policy(1, 10, down_window=300)
    held = decide(4, [LOW_CPU], policy, enabled_seconds_ago=120)
    assert held.desired == 4
    assert held.clipped == ["scale-down stabilization (300 s): the autoscaler was enabled 120 s ago"]
    assert decide(4, [LOW_CPU], policy, enabled_seconds_ago=301).desired == 3
    assert decide(4, [LOW_CPU], policy).desired == 3  # enabled before it was recorded
    # Scaling up is not held.
    assert decide(2, [MetricInput("cpu", 140, 70)], policy, enabled_seconds_ago=1).desired == 4


# --- properties ---------------------------------------------------------------------------------------
policies = st.builds(
    lambda lo, span, up, down, upw, downw: Policy(lo, lo + span, up, down, upw, downw),
    st.integers(0, 5), st.integers(0, 15), st.integers(1, 6), st.integers(1, 6),
    st.sampled_from([0.0, 15.0, 60.0]), st.sampled_from([0.0, 60.0, 300.0]),
)
metric = st.builds(
    MetricInput, st.sampled_from(["cpu", "latency_p95", "demand"]),
    st.one_of(st.none(), st.floats(0, 5000, allow_nan=False)), st.one_of(st.none(), st.integers(1, 500)),
    st.booleans(), st.integers(0, 10),
)
histories = st.lists(st.tuples(st.floats(0, 600, allow_nan=False), st.integers(0, 30)), max_size=8)


@settings(max_examples=300, deadline=None)
@given(current=st.integers(0, 20), metrics=st.lists(metric, max_size=4), policy=policies, history=histories,
       burn=st.booleans(), enabled=st.one_of(st.none(), st.floats(0, 600, allow_nan=False)))
def test_never_down_while_unreadable_or_just_enabled(current, metrics, policy, history, burn, enabled) -> None:
    out = decide(current, metrics, policy, history=history, fast_burn=burn, enabled_seconds_ago=enabled)
    assert policy.min_instances <= out.desired <= policy.max_instances
    if current > policy.max_instances:
        return  # the bounds pull an out-of-range count back in whatever else holds
    if any(m.unavailable for m in metrics) or (enabled is not None and enabled < policy.down_window):
        assert out.desired >= current


@settings(max_examples=300, deadline=None)
@given(current=st.integers(1, 30), value=st.floats(0, 1000, allow_nan=False), target=st.integers(1, 300),
       missing=st.integers(1, 30))
def test_missing_figures_only_damp_a_change(current, value, target, missing) -> None:
    full = propose(current, MetricInput("cpu", value, target))["proposal"]
    damped = propose(current, MetricInput("cpu", value, target, missing=missing))["proposal"]
    assert min(full, current) <= damped <= max(full, current)


# --- evaluate() against the database ------------------------------------------------------------------
@pytest.fixture
def svc(db: None) -> Service:
    s = service_with("api", autoscale_enabled=True, min_instances=1, max_instances=4, target_cpu_percent=70,
                     scale_down_stabilization_seconds=0)
    actions.scale_service(s, 2, actor="system:autoscaler")
    s.refresh_from_db()
    return s


def _instances(svc: Service, *cpus: float | None) -> None:
    Instance.objects.filter(service=svc).delete()
    now = timezone.now()
    for cpu in cpus:
        inst = Instance.objects.create(service=svc, driver="process", state=Instance.State.RUNNING, cpu_percent=cpu)
        ProbeResult.objects.create(service=svc, instance=inst, at=now, ok=True, latency_ms=5.0)


def test_missing_cpu_figures_hold_the_scale_down_the_latency_asks_for(svc: Service) -> None:
    _instances(svc, None, None)  # the driver gave no stats
    d = autoscale.evaluate(svc)
    assert d.desired == 2 and not d.applied and d.inputs["unavailable"] == ["cpu"]
    assert any("no figures for cpu" in c for c in d.clipped)
    assert d.inputs["recommendation"] is None  # a skipped pass recommends nothing (stabilizes nothing)
    # One figure of two: the other counts at target, which damps the scale-down to none.
    _instances(svc, 10.0, None)
    d = autoscale.evaluate(svc)
    assert d.desired == 2 and d.inputs["unavailable"] == []
    assert "1 of 2 without a figure" in d.inputs["metrics"][0]["note"]
    # Both figures low: now it scales down.
    _instances(svc, 10.0, 12.0)
    d = autoscale.evaluate(svc)
    assert d.applied and d.desired == 1
    svc.refresh_from_db()
    assert svc.desired_instances == 1


def test_a_failing_demand_provider_holds_scale_down(svc: Service) -> None:
    _instances(svc, 10.0, 12.0)

    def broken(name: str) -> int:
        raise ConnectionError("workflows database unreachable")

    saved = autoscale._demand_provider
    autoscale.register_demand_provider(broken)
    try:
        d = autoscale.evaluate(svc)
    finally:
        autoscale.register_demand_provider(saved)
    assert d.desired == 2 and d.inputs["unavailable"] == ["demand"]
    assert autoscale.evaluate(svc).desired == 1  # the provider back: down it goes


def test_a_just_enabled_autoscaler_waits_its_window_before_scaling_down(db: None) -> None:
    svc = service_with("api", min_instances=1, max_instances=4, target_cpu_percent=70,
                       scale_down_stabilization_seconds=300)
    actions.scale_service(svc, 3, actor="system:test")
    _instances(svc, 5.0, 5.0, 5.0)
    # Enabled from the SLA page's settings form: one audit entry, saying when.
    update_service_settings(svc, {"autoscale_enabled": True}, actor="system:test")
    entry = AuditEntry.objects.filter(action="service.update").latest("id")
    assert entry.payload["changes"] == {"autoscale_enabled": [False, True]}
    enabled_at = AutoscaleSettings.objects.get(pk=svc.pk).autoscale_enabled_at
    assert enabled_at is not None and abs((entry.created_at - enabled_at).total_seconds()) < 5

    d = autoscale.evaluate(svc)
    assert d.desired == 3 and not d.applied and d.raw == 1
    assert any("the autoscaler was enabled" in c for c in d.clipped)
    # Once the window has passed since it was enabled (and the recommendations in it allow it: the
    # held decisions recommended 1), it scales down, by the rate policy.
    later = timezone.now() + timedelta(seconds=301)
    for inst in Instance.objects.filter(service=svc):  # fresh probes then (else latency is unreadable)
        ProbeResult.objects.create(service=svc, instance=inst, at=later, ok=True, latency_ms=5.0)
    d = autoscale.evaluate(svc, now=later)
    assert d.applied and d.desired == 2
    # Saving the form again without turning it off and on does not restart the window.
    update_service_settings(svc, {"autoscale_enabled": True, "max_instances": 5}, actor="system:test")
    assert AutoscaleSettings.objects.get(pk=svc.pk).autoscale_enabled_at == enabled_at
