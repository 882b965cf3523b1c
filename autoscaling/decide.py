"""The autoscaler's decision, pure: Kubernetes HPA's algorithm on this console's metrics (see
autoscaling/autoscaler.py for the algorithm in words). No database, no settings, no clock: the
property tests drive it directly."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

TOLERANCE = 0.10


@dataclass
class MetricInput:
    name: str  # cpu | latency_p95 | demand
    value: float | None  # per-instance metrics: the average over the instances that have a figure
    target: float | None
    per_instance: bool = True  # demand is a total: desired = ceil(value / target)
    missing: int = 0  # per-instance metrics: instances (of `current`) without a figure

    @property
    def used(self) -> bool:
        return self.target is not None and self.target > 0

    @property
    def unavailable(self) -> bool:
        """Set up but unreadable now (no figures, no probes, the provider failing)."""
        return self.used and self.value is None


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
    unavailable: list[str] = field(default_factory=list)  # metrics in use that could not be read


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
    missing = min(metric.missing, current) if metric.per_instance else 0
    if missing:
        # The HPA's rule for pods without a figure: `value` averages the measured ones; for a
        # scale-down the others count as at target (100 %), for a scale-up as idle (0 %), and if
        # that reverses the direction or lands inside the tolerance nothing changes. So missing
        # figures only ever damp a change, never cause one.
        assumed = metric.target if ratio < 1.0 else 0.0
        measured = current - missing
        new_ratio = (metric.value * measured + assumed * missing) / current / metric.target
        out["ratio"] = round(new_ratio, 3)
        out["note"] = f"{missing} of {current} without a figure, counted at {assumed / metric.target:.0%} of target"
        if abs(new_ratio - 1.0) <= tolerance + 1e-9 or (ratio < 1.0) != (new_ratio < 1.0):
            out["proposal"] = current
            out["note"] += ": no change"
            return out
        out["proposal"] = math.ceil(current * new_ratio - 1e-9)
        return out
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
           hold_scale_down: str = "", enabled_seconds_ago: float | None = None) -> Outcome:
    """history: (age in seconds, earlier recommendation) pairs; recommendations are stored bounded
    by min/max, as the HPA stores them. As the HPA: no scale-down while a metric in use cannot be
    read (Outcome.unavailable names them), and none within the scale-down stabilization window
    of the autoscaler being enabled (enabled_seconds_ago; None = long ago, or not known)."""
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
    if result < current and enabled_seconds_ago is not None and enabled_seconds_ago < policy.down_window:
        # The HPA seeds a new autoscaler's recommendations with the current count: nothing it
        # saw before it was enabled may scale the service down within the window.
        clipped.append(f"scale-down stabilization ({policy.down_window:g} s): the autoscaler was enabled "
                       f"{enabled_seconds_ago:.0f} s ago")
        result = current
    # 2. rate policies
    if result > current + policy.up_step:
        clipped.append(f"scale-up rate: at most +{policy.up_step} per decision")
        result = current + policy.up_step
    if result < current - policy.down_step:
        clipped.append(f"scale-down rate: at most -{policy.down_step} per decision")
        result = current - policy.down_step
    unavailable = [m.name for m in metrics if m.unavailable]
    if result < current and unavailable:
        # The HPA scales up on the metrics it has, but never down while one is missing: the
        # missing one might be the one that needs the capacity.
        clipped.append(f"scale-down held: no figures for {', '.join(unavailable)} (no scale-down while a metric "
                       "cannot be read)")
        result = current
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
    return Outcome(current, raw, result, proposals, clipped, summary, unavailable)
