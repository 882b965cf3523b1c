"""When a schedule fires: the instants of a cron expression (croniter, in the schedule's time zone)
or of a fixed interval, and which of the instants due since the last claim to fire under the
missed-fires policy. Pure: no models, no settings, no clock (the caller passes `now`)."""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TICK = timedelta(microseconds=1)
MAX_INTERVAL = 366 * 24 * 3600
MAX_BOUND = 100
# How many missed instants a claim looks back over, at most: a schedule stopped for a month does not
# walk a million seconds to count them (the count shown is then "at least this many").
MISSED_SCAN = 1000

SKIP, ONCE, EACH = "skip", "once", "each"
MISSED_POLICIES = (SKIP, ONCE, EACH)


class Invalid(ValueError):
    """A schedule's spec refused; `field` names the field (for the 400 and the form)."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail


@functools.lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def zone(name: str) -> zoneinfo.ZoneInfo:
    # Membership first: ZoneInfo() also opens any file a crafted name points at.
    if name != "UTC" and name not in _zones():
        raise Invalid("timezone", f"Unknown time zone '{name[:60]}'; use an IANA name such as Europe/Berlin.")
    return zoneinfo.ZoneInfo(name)


@dataclass(frozen=True)
class Cadence:
    """A cron expression (5 fields, or 6 with seconds last, croniter's convention) in `tz`, or an
    interval in whole seconds aligned to the Unix epoch (3600 → every full UTC hour)."""

    cron: str = ""
    interval: int | None = None
    tz: str = "UTC"
    _zone: zoneinfo.ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if bool(self.cron) == (self.interval is not None):
            raise Invalid("cron", "Give either a cron expression or an interval (seconds), not both or neither.")
        object.__setattr__(self, "_zone", zone(self.tz))
        if self.interval is not None:
            if isinstance(self.interval, bool) or not isinstance(self.interval, int):
                raise Invalid("interval", "The interval is a whole number of seconds.")
            if not 1 <= self.interval <= MAX_INTERVAL:
                raise Invalid("interval", f"The interval must be between 1 and {MAX_INTERVAL} seconds.")
            return
        fields = self.cron.split()
        if len(fields) not in (5, 6) or not croniter.is_valid(self.cron):
            raise Invalid("cron", f"'{self.cron[:100]}' is not a cron expression (5 fields, or 6 with "
                                  "seconds last, e.g. '30 2 * * *' or '* * * * * *').")
        try:
            self.after(EPOCH + timedelta(days=365 * 56))
        except (CroniterBadDateError, CroniterError, CroniterBadCronError):
            raise Invalid("cron", f"'{self.cron[:100]}' never fires.") from None

    @property
    def seconds_field(self) -> bool:
        return self.interval is not None or len(self.cron.split()) == 6

    def after(self, t: datetime) -> datetime:
        """The first instant strictly after t (UTC)."""
        if self.interval is not None:
            iv = timedelta(seconds=self.interval)
            k = (t - EPOCH) // iv + 1
            return EPOCH + k * iv
        nxt = croniter(self.cron, t.astimezone(self._zone)).get_next(datetime)
        return nxt.astimezone(UTC)

    def before(self, t: datetime) -> datetime:
        """The last instant strictly before t (UTC)."""
        if self.interval is not None:
            iv = timedelta(seconds=self.interval)
            k = -((EPOCH - t) // iv) - 1  # ceil((t - EPOCH) / iv) - 1
            return EPOCH + k * iv
        prev = croniter(self.cron, t.astimezone(self._zone)).get_prev(datetime)
        return prev.astimezone(UTC)

    def upcoming(self, t: datetime, n: int) -> list[datetime]:
        out: list[datetime] = []
        for _ in range(n):
            t = self.after(t)
            out.append(t)
        return out

    def local(self, t: datetime) -> datetime:
        return t.astimezone(self._zone)


@dataclass
class Plan:
    fire: list[datetime]  # ascending: the instants to fire now
    skipped: int  # missed instants not fired (at least this many when capped)
    capped: bool  # more than MISSED_SCAN instants were missed
    next_at: datetime  # the schedule's next due instant (first after now)
    latest_skipped: datetime | None = None


def _walk_back(c: Cadence, start: datetime, floor: datetime, limit: int) -> Iterator[datetime]:
    """Instants < start and >= floor, newest first, at most limit."""
    t = start
    for _ in range(limit):
        t = c.before(t)
        if t < floor:
            return
        yield t


def plan_fires(c: Cadence, due: datetime, now: datetime, policy: str, bound: int, grace: timedelta) -> Plan:
    """The instants in [due, now] split into on time (within `grace` of now: always fired) and
    missed (older: the controller was down, or paused by an outage), which `policy` decides:
    skip fires none of them, once fires the latest, each fires the latest `bound` (oldest first).
    `due` is the schedule's earliest unfired instant (its next_fire_at)."""
    if policy not in MISSED_POLICIES:
        raise Invalid("missed_policy", f"Unknown missed-fires policy '{policy}'; choose skip, once or each.")
    cutoff = now - grace
    first_on_time = due if due >= cutoff else c.after(cutoff - TICK)
    on_time: list[datetime] = []
    t = first_on_time
    while t <= now:
        on_time.append(t)
        t = c.after(t)
    next_at = t
    missed = list(_walk_back(c, first_on_time, due, MISSED_SCAN + 1)) if due < first_on_time else []
    capped = len(missed) > MISSED_SCAN
    missed = missed[:MISSED_SCAN]
    take = {SKIP: 0, ONCE: 1, EACH: max(0, bound)}[policy]
    chosen = sorted(missed[:take])
    rest = missed[take:]
    return Plan(fire=chosen + on_time, skipped=len(rest), capped=capped, next_at=next_at,
                latest_skipped=rest[0] if rest else None)
