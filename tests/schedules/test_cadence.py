"""The pure parts: cadence instants and the missed-fires plan, against a brute-force enumeration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schedules.cadence import EACH, ONCE, SKIP, Cadence, Invalid, plan_fires

BASE = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # the night Europe/Berlin moves to summer time
CADENCES = [Cadence(interval=1), Cadence(interval=7), Cadence(cron="* * * * * *"),
            Cadence(cron="*/15 * * * * *", tz="Europe/Berlin"), Cadence(cron="* * * * * 0,30", tz="America/New_York"),
            Cadence(cron="* * * * *", tz="Asia/Kolkata")]


def brute(c: Cadence, lo: datetime, hi: datetime) -> list[datetime]:
    """Every instant in [lo, hi], by stepping after() from just before lo."""
    out, t = [], c.after(lo - timedelta(microseconds=1))
    while t <= hi:
        out.append(t)
        t = c.after(t)
    return out


@settings(max_examples=300, deadline=None)
@given(c=st.sampled_from(CADENCES), start=st.integers(0, 4 * 3600 * 1000), down=st.integers(0, 300_000),
       policy=st.sampled_from([SKIP, ONCE, EACH]), bound=st.integers(1, 20), grace_ms=st.integers(0, 5000))
def test_plan_against_brute_force(c: Cadence, start: int, down: int, policy: str, bound: int, grace_ms: int) -> None:
    """The last claim left `due` (an instant); the controller comes back at `now`."""
    due = c.after(BASE + timedelta(milliseconds=start))
    now = due + timedelta(milliseconds=down)
    grace = timedelta(milliseconds=grace_ms)
    plan = plan_fires(c, due, now, policy, bound, grace)
    every = brute(c, due, now)
    on_time = [t for t in every if t >= now - grace]
    missed = [t for t in every if t < now - grace]
    assert plan.fire == sorted(set(plan.fire))  # ascending, each instant once
    assert set(plan.fire) <= set(every)  # only real instants, none in the future
    assert set(on_time) <= set(plan.fire)  # what is on time always fires
    fired_missed = [t for t in plan.fire if t < now - grace]
    expected = {SKIP: [], ONCE: missed[-1:], EACH: missed[-bound:] if bound else []}[policy]
    assert fired_missed == expected
    assert plan.skipped == len(missed) - len(expected) and not plan.capped
    assert plan.next_at > now and c.before(plan.next_at) <= now  # no instant in (now, next_at)
    if plan.skipped:
        assert plan.latest_skipped == missed[len(missed) - len(expected) - 1]


def test_a_long_outage_is_capped() -> None:
    c = Cadence(interval=1)
    plan = plan_fires(c, BASE, BASE + timedelta(days=30), EACH, 10, timedelta(seconds=1))
    assert len(plan.fire) == 10 + 2 and plan.capped and plan.skipped >= 990
    assert plan.next_at == BASE + timedelta(days=30, seconds=1)


def test_cron_in_a_zone_and_dst() -> None:
    c = Cadence(cron="30 2 * * *", tz="Europe/Berlin")  # 02:30 does not exist on 2026-03-29 in Berlin
    nxt = c.upcoming(BASE, 3)
    assert all(t.tzinfo is UTC for t in nxt)
    assert [c.local(t).strftime("%m-%d %H:%M") for t in nxt][1:] == ["03-30 02:30", "03-31 02:30"]
    assert Cadence(cron="0 6 * * *", tz="Europe/Berlin").after(BASE) == datetime(2026, 3, 29, 4, 0, tzinfo=UTC)


def test_intervals_are_aligned_to_the_epoch() -> None:
    c = Cadence(interval=3600)
    assert c.after(BASE + timedelta(minutes=5)) == BASE + timedelta(hours=1)
    assert c.before(BASE) == BASE - timedelta(hours=1)


@pytest.mark.parametrize(("kw", "field"), [({"cron": "* * * * * * *"}, "cron"), ({"interval": 10**9}, "interval"),
                                          ({"interval": True}, "interval"), ({"cron": "x y z a b"}, "cron"),
                                          ({"interval": 5, "tz": "Nowhere"}, "timezone")])
def test_refused(kw: dict, field: str) -> None:
    with pytest.raises(Invalid) as info:
        Cadence(**kw)
    assert info.value.field == field


def test_dst_days_as_documented() -> None:
    """docs/schedules.md: a local time skipped by spring-forward fires at the gap's end; one that
    exists twice on the fall-back day fires at both instants."""
    c = Cadence(cron="30 2 * * *", tz="Europe/Berlin")
    spring = c.upcoming(datetime(2026, 3, 28, 12, tzinfo=UTC), 1)[0]
    assert c.local(spring).strftime("%m-%d %H:%M %z") == "03-29 03:00 +0200"
    autumn = c.upcoming(datetime(2026, 10, 24, 12, tzinfo=UTC), 2)
    assert autumn == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 1, 30, tzinfo=UTC)]
