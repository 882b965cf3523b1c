"""Roll-up tiers: the SLA numbers keep their meaning when they come from hour and day rows.

The same synthetic history (three days of minute rows) is read both ways: from the minute rows
alone, and through the tiers the controller builds as minutes close. Uptime, budget and counts
agree exactly; p95 agrees within one histogram bucket (it is exact here: histograms add up)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.stats import LATENCY_BUCKETS_MS, hist_percentile
from health import rollups
from health.models import ProbeRollup
from slo import sla
from tests.conftest import service_with

NOW = datetime(2026, 11, 20, 14, 37, 25, tzinfo=UTC)


def synthetic_history(services: list, *, days: int, seed: int = 7) -> None:
    """Minute rows for `days` up to NOW: ~60 probes a minute, failures and slow spells sprinkled."""
    rng = random.Random(seed)
    rows = []
    first = rollups.floor_to(NOW - timedelta(days=days), rollups.MINUTE)
    for svc in services:
        at = first
        while at <= NOW:
            total = rng.choice([60, 60, 60, 59, 0 if rng.random() < 0.01 else 60])
            down = rng.choice([0] * 30 + [1, 2, 60]) if total else 0
            down = min(down, total)
            up = total - down
            hist = [0] * (len(LATENCY_BUCKETS_MS) + 1)
            for _ in range(up):
                hist[min(len(hist) - 1, int(rng.expovariate(0.4)))] += 1
            slow = sum(hist[9:])  # above 250 ms
            rows.append(ProbeRollup(service=svc, span=rollups.MINUTE, start=at, total=total, up=up, down=down,
                                    slow=slow, excluded=0, hist=hist, max_ms=None))
            at += timedelta(minutes=1)
    ProbeRollup.objects.bulk_create(rows, batch_size=5000)


def from_minutes(svc, seconds: int) -> sla.WindowStats:
    """The reference: the window summed over minute rows only."""
    start = rollups.window_start(NOW, seconds)
    stats = sla.WindowStats(seconds)
    merged = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    for row in ProbeRollup.objects.filter(service=svc, span=rollups.MINUTE, start__gte=start).values():
        stats.total += row["total"]
        stats.up += row["up"]
        stats.down += row["down"]
        stats.slow += row["slow"]
        for i, count in enumerate(row["hist"]):
            merged[i] += count
    stats.p95_ms = hist_percentile(merged, 0.95)
    return stats


@pytest.fixture
def history(db: None) -> list:
    services = [service_with(f"s{i}", uptime_objective=99.0) for i in range(3)]
    synthetic_history(services, days=3)
    # What the controller does as the minutes close, in one go.
    rollups.settle(NOW - timedelta(days=3, hours=1), NOW)
    return services


def bucket(ms: float | None) -> int | None:
    return None if ms is None else LATENCY_BUCKETS_MS.index(ms) if ms in LATENCY_BUCKETS_MS else len(LATENCY_BUCKETS_MS)


@pytest.mark.parametrize("seconds", [300, 1800, 3600, 6 * 3600, 86400, 2 * 86400, 30 * 86400])
def test_windows_from_the_tiers_equal_the_minutes(history: list, seconds: int) -> None:
    ids = [s.pk for s in history]
    tiered = sla.fleet_window_stats(ids, seconds, now=NOW, percentiles=True)
    for svc in history:
        ref, got = from_minutes(svc, seconds), tiered[svc.pk]
        assert ref.total > 0
        assert (got.total, got.up, got.down, got.slow) == (ref.total, ref.up, ref.down, ref.slow)
        assert got.uptime == pytest.approx(ref.uptime)
        assert sla.budget_remaining(svc, stats=got) == pytest.approx(sla.budget_remaining(svc, stats=ref))
        if seconds <= 86400:
            assert abs(bucket(got.p95_ms) - bucket(ref.p95_ms)) <= 1


def test_a_long_window_reads_a_few_hundred_rows_not_the_minutes(history: list) -> None:
    svc = history[0]
    start = rollups.window_start(NOW, 30 * 86400)
    read = ProbeRollup.objects.filter(rollups.window_filter(start, NOW), service=svc).count()
    minutes = ProbeRollup.objects.filter(service=svc, span=rollups.MINUTE).count()
    assert minutes > 4000 and read < 200


def test_daily_and_hourly_series_equal_the_minutes(history: list) -> None:
    svc = history[1]
    days = sla.daily_uptime(svc, 5, now=NOW)
    for point in days:
        day = datetime.fromisoformat(point["label"]).replace(tzinfo=UTC)
        rows = ProbeRollup.objects.filter(service=svc, span=rollups.MINUTE, start__gte=day,
                                          start__lt=day + timedelta(days=1))
        total, up = sum(r.total for r in rows), sum(r.up for r in rows)
        assert point["probes"] == total
        assert point["uptime"] == (pytest.approx(100.0 * up / total) if total else None)
    hours = sla.hourly_uptime(svc, 24, now=NOW)
    assert len(hours) == 24 and hours[-1]["label"] == "14:00"
    first = rollups.floor_to(NOW, rollups.HOUR) - timedelta(hours=23)
    expected = sum(r.total for r in ProbeRollup.objects.filter(service=svc, span=rollups.MINUTE, start__gte=first))
    assert sum(p["probes"] for p in hours) == expected


def test_the_settled_tier_is_rebuilt_not_added_to(history: list) -> None:
    def days() -> list[int]:
        return list(ProbeRollup.objects.filter(span=rollups.DAY).order_by("service", "start")
                    .values_list("total", flat=True))

    before = days()
    rollups.settle(NOW - timedelta(days=3, hours=1), NOW)  # run twice: same rows
    after = days()
    assert before == after and len(after) == 3 * 4


def test_prune_keeps_each_tier_for_its_time(history: list) -> None:
    rollups.prune(NOW + timedelta(days=1))  # a day later: minutes older than 48 h go
    oldest = ProbeRollup.objects.filter(span=rollups.MINUTE).order_by("start").first()
    assert oldest.start >= NOW + timedelta(days=1) - rollups.KEEP[rollups.MINUTE]
    assert ProbeRollup.objects.filter(span=rollups.HOUR).count() > 3 * 70  # hours stay


@settings(max_examples=200, deadline=None)
@given(back=st.integers(min_value=0, max_value=40 * 86400), now=st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)))
def test_segments_tile_the_window(back: int, now: datetime) -> None:
    start = rollups.window_start(now, back)
    pieces = sorted(rollups.segments(start, now), key=lambda p: p[1])
    # Contiguous from start, no overlap, each aligned to its span, the open piece last.
    at = start
    for span, lo, hi in pieces:
        assert lo == at and rollups.floor_to(lo, span) == lo
        if hi is None:
            assert (span, lo) == pieces[-1][:2]
            break
        assert lo < hi and rollups.floor_to(hi, span) == hi
        if span != rollups.MINUTE:
            assert hi <= rollups.settled_before(now, rollups.HOUR)  # only settled rows
        at = hi
    assert pieces[-1][2] is None and pieces[-1][0] == rollups.MINUTE


def test_the_monitor_job_rolls_minutes_and_settles_their_hour(db: None) -> None:
    from django.utils import timezone

    from fleet.models import Instance
    from health.models import ProbeResult

    svc = service_with("job")
    inst = Instance.objects.create(service=svc, driver="process", state="running")
    at = timezone.now() - timedelta(minutes=1)
    ProbeResult.objects.bulk_create([ProbeResult(service=svc, instance=inst, at=at, ok=ok, latency_ms=7.0)
                                     for ok in (True, True, False)])
    job = rollups.Rollup()
    job()  # the first pass: the last two minutes rolled, their hour (and day) settled
    minute = ProbeRollup.objects.get(service=svc, span=rollups.MINUTE)
    hour = ProbeRollup.objects.get(service=svc, span=rollups.HOUR)
    day = ProbeRollup.objects.get(service=svc, span=rollups.DAY)
    assert (minute.total, minute.down) == (hour.total, hour.down) == (day.total, day.down) == (3, 1)
    assert hour.start == rollups.floor_to(at, rollups.HOUR) and hour.hist == minute.hist
    job()  # the same minute again: recomputed, nothing added
    assert ProbeRollup.objects.get(service=svc, span=rollups.MINUTE).total == 3
