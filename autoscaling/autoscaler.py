"""The autoscaler: Kubernetes HPA's algorithm on this console's metrics, explaining every decision.

Per metric: desired = ceil(current × value / target), ignored while value/target is within the
10 % tolerance (so noise does not move anything). The largest proposal wins. Then, as the HPA
does:
1. stabilization — scale down only to the highest recommendation of the last
   `scale_down_stabilization_seconds` (300 s by default), scale up only to the lowest of the
   last `scale_up_stabilization_seconds` (0 = immediately);
2. rate policies — at most `scale_up_max_step` added / `scale_down_max_step` removed per decision;
3. bounds — the service's min/max instances.
As the HPA also does: no scale-down while a metric in use cannot be read (no CPU figures, no
latency probes in the window, the demand provider failing; the others may still scale up), an
instance without a CPU figure counts at target for a scale-down and idle for a scale-up, and no
scale-down within `scale_down_stabilization_seconds` of the autoscaler being enabled.
On top: an SLA page-severity incident adds an instance even when CPU looks fine; little error budget left
(< HMS_AUTOSCALE_BUDGET_HOLD) holds any scale-down; a maintenance window pauses the autoscaler;
a manual scale is an override (owner, optional TTL) that pauses it until it expires.

`decide()` is pure (the property tests drive it); `evaluate()` gathers the inputs, stores the
decision with them (including "no change") and applies a change through
actions.scale_service(actor="system:autoscaler"), so policies and the audit apply as to anyone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from autoscaling import actions
from autoscaling.actions import ACTOR
from autoscaling.decide import TOLERANCE, MetricInput, Outcome, Policy, decide
from autoscaling.models import AutoscaleDecision, ScaleOverride
from core.stats import percentile
from fleet import actions as fleet_actions
from fleet.models import Instance, Service
from health.models import ProbeResult
from slo import sla

log = logging.getLogger(__name__)
__all__ = ["ACTOR", "TOLERANCE", "MetricInput", "Outcome", "Policy", "decide", "evaluate", "evaluate_all"]

# --- the workflow demand provider (workflows registers it; autoscaling never imports workflows) ------
_demand_provider: Callable[[str], int] | None = None


def register_demand_provider(fn: Callable[[str], int]) -> None:
    """fn(service_name) -> steps queued or running against that service."""
    global _demand_provider
    _demand_provider = fn


def demand_for(name: str) -> int | None:
    """None when the provider fails (a metric that cannot be read) or none is registered."""
    if _demand_provider is None:
        return None
    try:
        return int(_demand_provider(name))
    except Exception:
        log.exception("demand provider failed")
        return None


# --- gathering inputs and applying -----------------------------------------------------------------------
def policy_for(svc: Service) -> Policy:
    a = svc.autoscale_settings
    return Policy(a.min_instances, max(a.min_instances, a.max_instances), a.scale_up_max_step, a.scale_down_max_step,
                  a.scale_up_stabilization_seconds, a.scale_down_stabilization_seconds)


def metrics_for(svc: Service, now: datetime) -> list[MetricInput]:
    a = svc.autoscale_settings
    running = svc.instances.filter(state=Instance.State.RUNNING)
    cpus = [c for c in running.values_list("cpu_percent", flat=True) if c is not None]
    # Instances the service should have but that gave no figure (starting, or stats failing).
    missing_cpu = max(0, svc.desired_instances - len(cpus))
    window = timedelta(seconds=settings.HMS_AUTOSCALE_LATENCY_WINDOW_SECONDS)
    latencies = sorted(ProbeResult.objects.filter(service=svc, ok=True, in_maintenance=False,
                                                  at__gte=now - window).values_list("latency_ms", flat=True))
    return [
        MetricInput("cpu", round(sum(cpus) / len(cpus), 1) if cpus else None, a.target_cpu_percent,
                    missing=missing_cpu),
        MetricInput("latency_p95", percentile(latencies, 0.95),
                    a.target_latency_ms or svc.objectives.latency_objective_ms),
        # Without a registered provider (a console without workflows) demand is not in use, rather
        # than a metric that cannot be read, which would hold every scale-down.
        MetricInput("demand", demand_for(svc.name),
                    a.target_demand_per_instance if _demand_provider is not None else None, per_instance=False),
    ]


def active_override(svc: Service, now: datetime) -> ScaleOverride | None:
    """The override in force, after ending an expired one. Manual scales become overrides when
    they happen (autoscaling.actions.override_manual_scale, fleet's scale hook)."""
    for ov in ScaleOverride.objects.filter(service=svc, cleared_at__isnull=True):
        if ov.expires_at and ov.expires_at <= now:
            actions.clear_scale_override(ov, actor=ACTOR, reason="TTL expired; the autoscaler resumes")
    return ScaleOverride.objects.filter(service=svc, cleared_at__isnull=True).first()


def evaluate_all() -> None:
    for svc in Service.objects.filter(autoscale_settings__autoscale_enabled=True).select_related(
            "autoscale_settings", "objectives"):
        try:
            evaluate(svc)
        except Exception:
            log.exception("autoscaler failed for %s", svc.name)


def evaluate(svc: Service, *, now: datetime | None = None) -> AutoscaleDecision:
    now = now or timezone.now()
    # Fresh, with the settings the decision reads, in one query (a plain refresh drops them).
    svc.refresh_from_db(from_queryset=Service.objects.select_related("autoscale_settings", "objectives"))
    current = svc.desired_instances
    inputs: dict[str, Any] = {"tolerance": TOLERANCE}
    window = sla.in_maintenance(svc, now)
    override = None if window else active_override(svc, now)
    if window or override:
        if window:
            summary = f"paused: maintenance until {window.ends_at:%H:%M} UTC ({window.reason or 'no reason'})"
            inputs["maintenance"] = {"id": window.pk, "ends_at": window.ends_at.isoformat()}
        else:
            until = f" until {override.expires_at:%H:%M:%S} UTC" if override.expires_at else " (no expiry)"
            summary = f"paused: manual override by {override.owner} at {override.instances}{until}"
            inputs["override"] = {"id": override.pk, "owner": override.owner, "instances": override.instances,
                                  "expires_at": override.expires_at.isoformat() if override.expires_at else None}
        return AutoscaleDecision.objects.create(service=svc, at=now, current=current, raw=current, desired=current,
                                                summary=summary, inputs=inputs)
    policy = policy_for(svc)
    metrics = metrics_for(svc, now)
    fast_burn = sla.fast_burning(svc)
    budget = sla.budget_remaining(svc)
    hold_at = settings.HMS_AUTOSCALE_BUDGET_HOLD
    hold = f"scale-down held: {budget:.0%} of the error budget left (< {hold_at:.0%})" \
        if budget is not None and budget < hold_at else ""
    horizon = max(policy.up_window, policy.down_window)
    history = [((now - at).total_seconds(), rec) for at, rec in AutoscaleDecision.objects.filter(
        service=svc, at__gte=now - timedelta(seconds=horizon)).values_list("at", "inputs__recommendation")
        if rec is not None]
    enabled_at = svc.autoscale_settings.autoscale_enabled_at
    since_enabled = (now - enabled_at).total_seconds() if enabled_at else None
    outcome = decide(current, metrics, policy, history=history, fast_burn=fast_burn, hold_scale_down=hold,
                     enabled_seconds_ago=since_enabled)
    rec = min(max(outcome.raw, policy.min_instances), policy.max_instances)
    inputs.update({
        "metrics": outcome.metrics,
        # A scale-down the other metrics asked for while one could not be read recommends nothing
        # (None): the HPA skips such a pass, so it never stabilizes a later decision.
        "recommendation": None if outcome.unavailable and rec < current else rec,
        "unavailable": outcome.unavailable,
        "enabled_at": enabled_at.isoformat() if enabled_at else None,
        "fast_burn": fast_burn,
        "budget_remaining": None if budget is None else round(budget, 4),
        "policy": {"min": policy.min_instances, "max": policy.max_instances, "up_step": policy.up_step,
                   "down_step": policy.down_step, "up_window": policy.up_window,
                   "down_window": policy.down_window},
    })
    decision = AutoscaleDecision(service=svc, at=now, current=current, raw=outcome.raw, desired=outcome.desired,
                                 summary=outcome.summary, inputs=inputs, clipped=outcome.clipped)
    if outcome.desired != current:
        result = fleet_actions.scale_service(svc, outcome.desired, actor=ACTOR, reason=explain(outcome))
        decision.applied = result.applied
        if not result.applied:
            decision.clipped = [*decision.clipped, f"refused by policy: {result.decision.detail}"]
            decision.summary = f"wanted {outcome.summary}; refused by policy"
    decision.save()
    return decision


def explain(outcome: Outcome) -> str:
    used = [f"{m['name']}={m['value']:g}/{m['target']:g}→{m['proposal']}" for m in outcome.metrics
            if m["proposal"] is not None and m["value"] is not None]
    text = f"{outcome.summary} ({', '.join(used) or 'no metrics'})"
    if outcome.clipped:
        text += "; " + "; ".join(outcome.clipped)
    return text[:300]


def prune(now: datetime | None = None) -> int:
    """Decisions are kept HMS_AUTOSCALE_KEEP_DAYS."""
    now = now or timezone.now()
    return AutoscaleDecision.objects.filter(at__lt=now - timedelta(days=settings.HMS_AUTOSCALE_KEEP_DAYS)).delete()[0]
