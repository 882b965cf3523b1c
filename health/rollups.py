"""Roll-ups of the raw probe results, which the SLA and the pages read, and their retention.

Three tiers, so a read touches a few hundred rows per service whatever the window:
- minute rows, rolled up from the raw results by `rollup_recent` on every pass of the controller's
  monitor loop (the current, partial minute included, so pages see fresh data);
- hour rows, each the sum of its 60 minutes, and day rows, each the sum of its 24 hours, rebuilt
  by `settle` when a minute closes (`Rollup`): histograms add up bucket by bucket, so a percentile
  over coarse rows is the one the minutes would give (tests/health/test_rollups.py proves it).
A coarse row is read only once it is *settled*: its period ended SETTLE before the current minute,
so its last minutes were rolled for good before it was built (`settled_before`). Everything after
that comes from the finer tier. `segments` cuts a window into the coarsest pieces that cover it.

Kept (`prune`): minutes 48 h, hours 92 days, days 400 days. Windows that start further back than
the minutes are kept (the 30-day budget) start on the hour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from core.stats import LATENCY_BUCKETS_MS, bucket_of, hist_percentile, minute_floor, percentile
from health.models import ProbeResult, ProbeRollup

MINUTE, HOUR, DAY = ProbeRollup.Span.MINUTE, ProbeRollup.Span.HOUR, ProbeRollup.Span.DAY
KEEP = {MINUTE: timedelta(hours=48), HOUR: timedelta(days=92), DAY: timedelta(days=400)}
SETTLE = timedelta(minutes=2)
COUNTS = ("total", "up", "down", "slow", "excluded")
_FINER = {HOUR: MINUTE, DAY: HOUR}


# --- the latency objectives (slo registers the provider; health never imports slo) -----------------
_objectives_provider: Callable[[], dict[int, float]] | None = None


def register_latency_objectives(fn: Callable[[], dict[int, float]]) -> None:
    """fn() -> {service id: p95 objective in ms}: a roll-up counts the good probes slower than it."""
    global _objectives_provider
    _objectives_provider = fn


def latency_objectives() -> dict[int, float]:
    return _objectives_provider() if _objectives_provider is not None else {}


# --- time arithmetic (pure) ---------------------------------------------------------------------------
def floor_to(at: datetime, span: int) -> datetime:
    if span == MINUTE:
        return minute_floor(at)
    if span == HOUR:
        return at.replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def ceil_to(at: datetime, span: int) -> datetime:
    floor = floor_to(at, span)
    return floor if floor == at else floor + timedelta(seconds=span)


def settled_before(now: datetime, span: int) -> datetime:
    """Hour or day rows that start before this are complete and final: their period ended SETTLE
    before the current minute (a day settles with its last hour)."""
    return floor_to(minute_floor(now) - SETTLE, span)


def window_start(now: datetime, seconds: float) -> datetime:
    """The first minute of a window of `seconds` ending now; on the hour when the window reaches
    back further than minute rows are kept."""
    start = minute_floor(now - timedelta(seconds=seconds))
    if now - start > KEEP[MINUTE] - timedelta(hours=1):
        start = floor_to(start, HOUR)
    return start


def segments(start: datetime, now: datetime) -> list[tuple[int, datetime, datetime | None]]:
    """[start, now] as (span, from, to) pieces, coarsest first: whole settled days as day rows,
    whole settled hours as hour rows, minute rows for the edges (`to` None: up to now)."""
    h0, h1 = ceil_to(start, HOUR), settled_before(now, HOUR)
    if h0 >= h1:
        return [(MINUTE, start, None)]
    d0, d1 = ceil_to(h0, DAY), floor_to(h1, DAY)
    pieces: list[tuple[int, datetime, datetime | None]] = []
    if d0 < d1:
        pieces += [(DAY, d0, d1), (HOUR, h0, d0), (HOUR, d1, h1)]
    else:
        pieces.append((HOUR, h0, h1))
    pieces += [(MINUTE, start, h0), (MINUTE, h1, None)]
    return [(span, lo, hi) for span, lo, hi in pieces if hi is None or lo < hi]


def window_filter(start: datetime, now: datetime) -> Q:
    """The roll-up rows that make up [start, now]: one query for any window, any number of services."""
    q = Q(pk__in=[])
    for span, lo, hi in segments(start, now):
        piece = Q(span=span, start__gte=lo)
        if hi is not None:
            piece &= Q(start__lt=hi)
        q |= piece
    return q


def merge(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum roll-up rows into one (counts and histograms add; p50/p95 from the merged histogram;
    max is the largest max)."""
    out: dict[str, Any] = dict.fromkeys(COUNTS, 0)
    hist = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    top: float | None = None
    for row in rows:
        for key in COUNTS:
            out[key] += row[key]
        for i, count in enumerate(row["hist"] or []):
            hist[i] += count
        if row["max_ms"] is not None and (top is None or row["max_ms"] > top):
            top = row["max_ms"]
    p50, p95 = hist_percentile(hist, 0.50), hist_percentile(hist, 0.95)
    return {**out, "hist": hist, "max_ms": top, "p50_ms": p50 if p50 != float("inf") else top,
            "p95_ms": p95 if p95 != float("inf") else top}


# --- building the tiers ------------------------------------------------------------------------------
_ROW_FIELDS = [*COUNTS, "hist", "p50_ms", "p95_ms", "max_ms"]


def _upsert(rows: list[ProbeRollup]) -> None:
    # One statement for the batch (INSERT … ON CONFLICT DO UPDATE on PostgreSQL and SQLite): a pass
    # over 300 services was 600 queries with update_or_create.
    for i in range(0, len(rows), 1000):
        ProbeRollup.objects.bulk_create(rows[i : i + 1000], update_conflicts=True,
                                        unique_fields=["service", "span", "start"], update_fields=_ROW_FIELDS)


def rollup_recent(now: datetime | None = None, minutes: int = 2) -> int:
    """Recompute the minute rows of the last `minutes` minutes (the current one included) from the
    raw results. Safe to run again: it recomputes, never adds."""
    now = now or timezone.now()
    start = minute_floor(now) - timedelta(minutes=minutes - 1)
    objectives = latency_objectives()
    groups: dict[tuple[int, datetime], list[tuple[bool, float, bool]]] = {}
    rows = ProbeResult.objects.filter(at__gte=start).values_list("service_id", "at", "ok", "latency_ms",
                                                                 "in_maintenance")
    for svc_id, at, ok, ms, maint in rows.iterator(chunk_size=5000):
        groups.setdefault((svc_id, minute_floor(at)), []).append((ok, ms, maint))
    out = []
    for (svc_id, minute), samples in groups.items():
        counted = [s for s in samples if not s[2]]
        hist = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        latencies = sorted(ms for ok, ms, _ in counted if ok)
        for ms in latencies:
            hist[bucket_of(ms)] += 1
        objective = objectives.get(svc_id, 300)
        out.append(ProbeRollup(
            service_id=svc_id, span=MINUTE, start=minute,
            total=len(counted), up=len(latencies), down=len(counted) - len(latencies),
            slow=sum(1 for ms in latencies if ms > objective), excluded=len(samples) - len(counted),
            hist=hist, p50_ms=percentile(latencies, 0.50), p95_ms=percentile(latencies, 0.95),
            max_ms=latencies[-1] if latencies else None))
    _upsert(out)
    return len(groups)


def rebuild(span: int, since: datetime, until: datetime) -> int:
    """Rebuild the rows of `span` (hour or day) for every period touching [since, until) from the
    finer tier, for every service: one read, one upsert."""
    lo, hi = floor_to(since, span), ceil_to(until, span)
    groups: dict[tuple[int, datetime], list[dict[str, Any]]] = {}
    rows = (ProbeRollup.objects.filter(span=_FINER[span], start__gte=lo, start__lt=hi)
            .values("service_id", "start", *COUNTS, "hist", "max_ms"))
    for row in rows.iterator(chunk_size=5000):
        groups.setdefault((row["service_id"], floor_to(row["start"], span)), []).append(row)
    _upsert([ProbeRollup(service_id=svc_id, span=span, start=period, **merge(group))
             for (svc_id, period), group in groups.items()])
    return len(groups)


def settle(since: datetime, until: datetime) -> None:
    """The minutes in [since, until) closed: rebuild their hours, then those hours' days."""
    rebuild(HOUR, since, until)
    rebuild(DAY, since, until)


def prune(now: datetime | None = None) -> dict[str, int]:
    """Bounded storage: raw results for HMS_PROBE_RAW_MINUTES, each roll-up tier for KEEP. slo and
    autoscaling prune their own rows."""
    now = now or timezone.now()
    raw = ProbeResult.objects.filter(at__lt=now - timedelta(minutes=settings.HMS_PROBE_RAW_MINUTES)).delete()[0]
    gone = Q(pk__in=[])
    for span, keep in KEEP.items():
        gone |= Q(span=span, start__lt=now - keep)
    roll = ProbeRollup.objects.filter(gone).delete()[0]
    return {"raw": raw, "rollups": roll}


# --- the controller's job (registered in health/apps.py) ---------------------------------------------
class Rollup:
    """Re-roll the current minute each pass; when a minute closes, roll it once more (its last
    probes may have landed after the previous pass) and settle the hour and day it belongs to."""

    def __init__(self) -> None:
        self.rolled_minute: datetime | None = None

    def __call__(self) -> None:
        now = timezone.now()
        minute = minute_floor(now)
        if minute == self.rolled_minute:
            rollup_recent(now, minutes=1)
            return
        rollup_recent(now, minutes=2)
        # On the first pass after a start, settle the last hour too: a restart mid-hour must not
        # leave that hour's row short of the minutes rolled before it.
        since = minute - timedelta(minutes=1) if self.rolled_minute else minute - timedelta(hours=1)
        settle(since, minute)
        self.rolled_minute = minute


# --- series for the charts ------------------------------------------------------------------------------
def period_totals(service_ids: Iterable[int], span: int, since: datetime,
                  now: datetime) -> dict[int, dict[datetime, list[int]]]:
    """{service id: {period start: [probes, up]}} for the periods of `span` from `since` to now:
    settled periods from their own rows, the rest (today, the current hour) from the finer tiers.
    Three queries at most (days, hours, minutes), whatever the number of services."""
    ids = list(service_ids)
    out: dict[int, dict[datetime, list[int]]] = {i: {} for i in ids}
    qs = ProbeRollup.objects.filter(service_id__in=ids, span=span, start__gte=since)
    cut = settled_before(now, span) if span != MINUTE else None
    if cut is not None:
        qs = qs.filter(start__lt=cut)
    for svc_id, start, total, up in qs.order_by().values_list("service_id", "start", "total", "up"):
        out[svc_id][start] = [total, up]
    if cut is None:
        return out
    for svc_id, periods in period_totals(ids, _FINER[span], max(since, cut), now).items():
        for start, (total, up) in periods.items():
            cell = out[svc_id].setdefault(floor_to(start, span), [0, 0])
            cell[0] += total
            cell[1] += up
    return out
