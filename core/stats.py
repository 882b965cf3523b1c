"""Small pure helpers for latency figures, shared by health (roll-ups), slo (windows) and
autoscaling (p95 input). No models, no settings: anything may import this."""

from __future__ import annotations

import bisect
import math
from datetime import datetime

# Latency histogram bucket upper bounds (ms) shared by the roll-ups: merging histograms gives a
# percentile for any window without keeping raw samples (the last bucket is "above 10 s").
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    5, 10, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000,
)


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[k]


def bucket_of(ms: float) -> int:
    return bisect.bisect_left(LATENCY_BUCKETS_MS, ms)


def hist_percentile(hist: list[int], q: float) -> float | None:
    """Percentile from merged histogram counts: the upper bound of the bucket holding it."""
    total = sum(hist)
    if not total:
        return None
    rank = math.ceil(q * total)
    seen = 0
    for i, count in enumerate(hist):
        seen += count
        if seen >= rank:
            return float(LATENCY_BUCKETS_MS[i]) if i < len(LATENCY_BUCKETS_MS) else float("inf")
    return None


def minute_floor(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)
