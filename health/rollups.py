"""Roll-ups of the raw probe results, which the SLA and the pages read, and retention.

(The tiers, minute → hour → day, are described in `rollup_recent`.)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from core.stats import LATENCY_BUCKETS_MS, bucket_of, minute_floor, percentile
from health.models import ProbeResult, ProbeRollup

# --- the latency objectives (slo registers the provider; health never imports slo) -----------------
_objectives_provider: Callable[[], dict[int, float]] | None = None


def register_latency_objectives(fn: Callable[[], dict[int, float]]) -> None:
    """fn() -> {service id: p95 objective in ms}: a roll-up counts the good probes slower than it."""
    global _objectives_provider
    _objectives_provider = fn


def latency_objectives() -> dict[int, float]:
    return _objectives_provider() if _objectives_provider is not None else {}


# --- roll-ups and retention ------------------------------------------------------------------------
def rollup_recent(now: datetime | None = None, minutes: int = 2) -> int:
    """Recompute the roll-ups of the last `minutes` minutes (the current one included, so pages
    and the SLA see fresh data) from the raw results."""
    now = now or timezone.now()
    start = minute_floor(now) - timedelta(minutes=minutes - 1)
    objectives = latency_objectives()
    groups: dict[tuple[int, datetime], list[tuple[bool, float, bool]]] = {}
    rows = ProbeResult.objects.filter(at__gte=start).values_list("service_id", "at", "ok", "latency_ms",
                                                                 "in_maintenance")
    for svc_id, at, ok, ms, maint in rows.iterator(chunk_size=5000):
        groups.setdefault((svc_id, minute_floor(at)), []).append((ok, ms, maint))
    for (svc_id, minute), samples in groups.items():
        counted = [s for s in samples if not s[2]]
        hist = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        latencies = sorted(ms for ok, ms, _ in counted if ok)
        for ms in latencies:
            hist[bucket_of(ms)] += 1
        objective = objectives.get(svc_id, 300)
        ProbeRollup.objects.update_or_create(
            service_id=svc_id, minute=minute,
            defaults={
                "total": len(counted),
                "up": sum(1 for ok, _, _ in counted if ok),
                "down": sum(1 for ok, _, _ in counted if not ok),
                "slow": sum(1 for ms in latencies if ms > objective),
                "excluded": len(samples) - len(counted),
                "hist": hist,
                "p50_ms": percentile(latencies, 0.50),
                "p95_ms": percentile(latencies, 0.95),
                "max_ms": latencies[-1] if latencies else None,
            },
        )
    return len(groups)


def prune(now: datetime | None = None) -> dict[str, int]:
    """Bounded storage: raw results for HMS_PROBE_RAW_MINUTES, roll-ups for 92 days (the 90-day
    bars). slo and autoscaling prune their own rows."""
    now = now or timezone.now()
    raw = ProbeResult.objects.filter(at__lt=now - timedelta(minutes=settings.HMS_PROBE_RAW_MINUTES)).delete()[0]
    roll = ProbeRollup.objects.filter(minute__lt=now - timedelta(days=92)).delete()[0]
    return {"raw": raw, "rollups": roll}



# --- the controller's job (registered in health/apps.py) ---------------------------------------------
class Rollup:
    """Re-roll the current minute; the previous one once more when a minute closes (its last
    probes may have landed after the previous pass)."""

    def __init__(self) -> None:
        self.rolled_minute: datetime | None = None

    def __call__(self) -> None:
        minute = minute_floor(timezone.now())
        rollup_recent(minutes=1 if minute == self.rolled_minute else 2)
        self.rolled_minute = minute
