"""The autoscaler: Kubernetes HPA's algorithm on this console's metrics, explaining every decision.

Per metric: desired = ceil(current × value / target), ignored while value/target is within the
10 % tolerance (so noise does not move anything). The largest proposal wins. Then, as the HPA
does:
1. stabilization — scale down only to the highest recommendation of the last
   `scale_down_stabilization_seconds` (300 s by default), scale up only to the lowest of the
   last `scale_up_stabilization_seconds` (0 = immediately);
2. rate policies — at most `scale_up_max_step` added / `scale_down_max_step` removed per decision;
3. bounds — the service's min/max instances.
On top: an SLA fast burn adds an instance even when CPU looks fine; little error budget left
(< HMS_AUTOSCALE_BUDGET_HOLD) holds any scale-down; a maintenance window pauses the autoscaler;
a manual scale is an override (owner, optional TTL) that pauses it until it expires.

`decide()` is pure (the property tests drive it); `evaluate()` gathers the inputs, stores the
decision with them (including "no change") and applies a change through
actions.scale_service(actor="system:autoscaler"), so policies and the audit apply as to anyone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from audit.models import AuditEntry
from services import actions, sla
from services.models import AutoscaleDecision, Instance, ProbeResult, ScaleOverride, Service
from services.monitoring import knob, percentile

log = logging.getLogger("hmsmgmt.autoscale")
ACTOR = "system:autoscaler"
TOLERANCE = 0.10

# --- the workflow demand provider (workflows registers it; services never imports workflows) ---------
_demand_provider: Callable[[str], int] | None = None


def register_demand_provider(fn: Callable[[str], int]) -> None:
    """fn(service_name) -> steps queued or running against that service."""
    global _demand_provider
    _demand_provider = fn


def demand_for(name: str) -> int | None:
    if _demand_provider is None:
        return None
    try:
        return int(_demand_provider(name))
    except Exception:
        log.exception("demand provider failed")
        return None


# --- the pure part -----------------------------------------------------------------------------------
@dataclass
class MetricInput:
    name: str  # cpu | latency_p95 | demand
    value: float | None
    target: float | None
    per_instance: bool = True  # demand is a total: desired = ceil(value / target)


@dataclass
class Policy:
    min_instances: int
    max_instances: int
    up_step: int = 4
    down_step: int = 1
    up_window: float = 0.0
    down_window: float = 300.0
    tolerance: float = TOLERANCE


@dataclass
class Outcome:
    current: int
    raw: int
    desired: int
    metrics: list[dict[str, Any]] = field(default_factory=list)
    clipped: list[str] = field(default_factory=list)
    summary: str = ""


def propose(current: int, metric: MetricInput, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """One metric's proposal, with the numbers that explain it."""
    out: dict[str, Any] = {"name": metric.name, "value": metric.value, "target": metric.target,
                           "ratio": None, "proposal": None, "note": ""}
    if metric.target is None or metric.target <= 0:
        out["note"] = "no target set"
        return out
    if metric.value is None:
        out["note"] = "no data"
        return out
    if metric.per_instance:
        if current == 0:
            out["note"] = "no instances to measure"
            return out
        ratio = metric.value / metric.target
        exact = current * ratio
    else:
        exact = metric.value / metric.target
        ratio = exact / current if current else (math.inf if exact > 0 else 1.0)
    out["ratio"] = round(ratio, 3) if math.isfinite(ratio) else None
    # The small epsilon keeps a value exactly at the tolerance edge (float noise) inside it.
    if current > 0 and abs(ratio - 1.0) <= tolerance + 1e-9:
        out["proposal"] = current
        out["note"] = f"within ±{tolerance:.0%} tolerance"
        return out
    proposal = math.ceil(exact - 1e-9)
    if not metric.per_instance and proposal < current:
        # Workflow demand says when to add capacity ahead of load; no queued steps says nothing
        # about how much the service's other clients need, so demand alone never scales down.
        out["note"] = f"ceil({metric.value:g} / {metric.target:g}) = {proposal}: demand only scales up"
        return out
    out["proposal"] = proposal
    if metric.per_instance:
        out["note"] = f"ceil({current} × {ratio:.2f})"
    else:
        out["note"] = f"ceil({metric.value:g} / {metric.target:g})"
    return out


def decide(current: int, metrics: list[MetricInput], policy: Policy, *,
           history: list[tuple[float, int]] = (), fast_burn: bool = False,
           hold_scale_down: str = "") -> Outcome:
    """history: (age in seconds, earlier recommendation) pairs; recommendations are stored bounded
    by min/max, as the HPA stores them."""
    proposals = [propose(current, m, policy.tolerance) for m in metrics]
    usable = [p["proposal"] for p in proposals if p["proposal"] is not None]
    raw = max(usable) if usable else current
    clipped: list[str] = []
    if fast_burn and raw <= current:
        raw = current + 1
        clipped.append("SLA fast burn: one more instance although the metrics look fine")
    rec = min(max(raw, policy.min_instances), policy.max_instances)

    # 1. stabilization windows
    up_rec = down_rec = rec
    for age, past in history:
        if age <= policy.up_window:
            up_rec = min(up_rec, past)
        if age <= policy.down_window:
            down_rec = max(down_rec, past)
    result = current
    if result < up_rec:
        result = up_rec
    if result > down_rec:
        result = down_rec
    if result != rec:
        if rec < current and result > rec:
            clipped.append(f"scale-down stabilization ({policy.down_window:g} s): highest recent "
                           f"recommendation is {down_rec}")
        elif rec > current and result < rec:
            clipped.append(f"scale-up stabilization ({policy.up_window:g} s): lowest recent "
                           f"recommendation is {up_rec}")
    # 2. rate policies
    if result > current + policy.up_step:
        clipped.append(f"scale-up rate: at most +{policy.up_step} per decision")
        result = current + policy.up_step
    if result < current - policy.down_step:
        clipped.append(f"scale-down rate: at most -{policy.down_step} per decision")
        result = current - policy.down_step
    if result < current and hold_scale_down:
        clipped.append(hold_scale_down)
        result = current
    # 3. bounds (also pulls a count that was set outside them back in)
    if result > policy.max_instances:
        clipped.append(f"max instances {policy.max_instances}")
        result = policy.max_instances
    if result < policy.min_instances:
        clipped.append(f"min instances {policy.min_instances}")
        result = policy.min_instances
    if raw > policy.max_instances and f"max instances {policy.max_instances}" not in clipped:
        clipped.append(f"max instances {policy.max_instances} (formula asked {raw})")
    if raw < policy.min_instances and f"min instances {policy.min_instances}" not in clipped:
        clipped.append(f"min instances {policy.min_instances} (formula asked {raw})")
    if result == current:
        summary = f"no change: {current} instances"
    else:
        summary = f"scale {'up' if result > current else 'down'} {current} → {result}"
    return Outcome(current, raw, result, proposals, clipped, summary)


# --- gathering inputs and applying -----------------------------------------------------------------------
def policy_for(svc: Service) -> Policy:
    return Policy(svc.min_instances, max(svc.min_instances, svc.max_instances), svc.scale_up_max_step,
                  svc.scale_down_max_step, svc.scale_up_stabilization_seconds, svc.scale_down_stabilization_seconds)


def metrics_for(svc: Service, now: datetime) -> list[MetricInput]:
    running = svc.instances.filter(state=Instance.State.RUNNING)
    cpus = [c for c in running.values_list("cpu_percent", flat=True) if c is not None]
    window = timedelta(seconds=knob("HMS_AUTOSCALE_LATENCY_WINDOW_SECONDS", 60))
    latencies = sorted(ProbeResult.objects.filter(service=svc, ok=True, in_maintenance=False,
                                                  at__gte=now - window).values_list("latency_ms", flat=True))
    return [
        MetricInput("cpu", round(sum(cpus) / len(cpus), 1) if cpus else None, svc.target_cpu_percent),
        MetricInput("latency_p95", percentile(latencies, 0.95), svc.target_latency_ms or svc.latency_objective_ms),
        MetricInput("demand", demand_for(svc.name), svc.target_demand_per_instance, per_instance=False),
    ]


def active_override(svc: Service, now: datetime) -> ScaleOverride | None:
    """The override in force, after ending an expired one and turning a manual scale (page, API,
    anyone but the autoscaler) into an override with the default TTL."""
    for ov in ScaleOverride.objects.filter(service=svc, cleared_at__isnull=True):
        if ov.expires_at and ov.expires_at <= now:
            actions.clear_scale_override(ov, actor=ACTOR, reason="TTL expired; the autoscaler resumes")
    last = (AuditEntry.objects.filter(action="scale", outcome=AuditEntry.Outcome.SUCCESS,
                                      target_type="services.service", target_id=str(svc.pk))
            .order_by("-created_at", "-id").first())
    if last and not last.actor.startswith("system:") \
            and not ScaleOverride.objects.filter(service=svc, created_at__gte=last.created_at).exists():
        ttl = int(knob("HMS_AUTOSCALE_OVERRIDE_TTL_SECONDS", 3600)) or None
        actions.create_scale_override(svc, owner=last.actor, instances=int(last.payload.get("to", 0)),
                                      ttl_seconds=ttl, actor=ACTOR,
                                      reason=f"manual scale (audit entry {last.pk})")
    return ScaleOverride.objects.filter(service=svc, cleared_at__isnull=True).first()


def evaluate_all() -> None:
    for svc in Service.objects.filter(autoscale_enabled=True):
        try:
            evaluate(svc)
        except Exception:
            log.exception("autoscaler failed for %s", svc.name)


def evaluate(svc: Service, *, now: datetime | None = None) -> AutoscaleDecision:
    now = now or timezone.now()
    svc.refresh_from_db()
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
    hold_at = float(knob("HMS_AUTOSCALE_BUDGET_HOLD", 0.25))
    hold = f"scale-down held: {budget:.0%} of the error budget left (< {hold_at:.0%})" \
        if budget is not None and budget < hold_at else ""
    horizon = max(policy.up_window, policy.down_window)
    history = [((now - at).total_seconds(), rec) for at, rec in AutoscaleDecision.objects.filter(
        service=svc, at__gte=now - timedelta(seconds=horizon)).values_list("at", "inputs__recommendation")
        if rec is not None]
    outcome = decide(current, metrics, policy, history=history, fast_burn=fast_burn, hold_scale_down=hold)
    inputs.update({
        "metrics": outcome.metrics,
        "recommendation": min(max(outcome.raw, policy.min_instances), policy.max_instances),
        "fast_burn": fast_burn,
        "budget_remaining": None if budget is None else round(budget, 4),
        "policy": {"min": policy.min_instances, "max": policy.max_instances, "up_step": policy.up_step,
                   "down_step": policy.down_step, "up_window": policy.up_window,
                   "down_window": policy.down_window},
    })
    decision = AutoscaleDecision(service=svc, at=now, current=current, raw=outcome.raw, desired=outcome.desired,
                                 summary=outcome.summary, inputs=inputs, clipped=outcome.clipped)
    if outcome.desired != current:
        result = actions.scale_service(svc, outcome.desired, actor=ACTOR, reason=explain(outcome))
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
