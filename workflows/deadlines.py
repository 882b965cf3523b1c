"""Run deadlines: a flow (or a schedule) may say when its runs must have finished.

Two forms, both plain JSON so they fit a flow file, the admin and the REST API alike:
- relative:   {"within_seconds": 1800}             finish within 30 min of the start;
- wall-clock: {"by": "06:00", "tz": "Europe/Berlin"}  finished by the next 06:00 in that zone
              after the start (a run started at 05:59 has a minute; one at 06:01 has a day).

Pure functions, no I/O: `validate_deadline` (a clear ValueError naming the problem) and
`compute_deadline` (the instant, in UTC). The controller's job that opens the incident for a missed
deadline lives in workflows.sweeps; the incident itself in slo.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_WITHIN = 366 * 86400  # a year: anything longer is a typo, not a deadline
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def validate_deadline(spec: Any) -> None:
    """None (no deadline) or one of the two forms; raises ValueError naming what is wrong."""
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise ValueError('A deadline is an object: {"within_seconds": 1800} or {"by": "06:00", "tz": "Europe/Berlin"}.')
    keys = set(spec)
    if keys == {"within_seconds"}:
        n = spec["within_seconds"]
        if isinstance(n, bool) or not isinstance(n, int | float) or not math.isfinite(n):
            raise ValueError("deadline.within_seconds must be a number of seconds.")
        if not 1 <= n <= MAX_WITHIN:
            raise ValueError(f"deadline.within_seconds must be between 1 and {MAX_WITHIN} (a year); got {n}.")
        return
    if keys in ({"by"}, {"by", "tz"}):
        by, tz = spec["by"], spec.get("tz", "UTC")
        if not isinstance(by, str) or not _HHMM.match(by):
            raise ValueError(f'deadline.by must be a time of day "HH:MM" (24 h); got {by!r}.')
        if not isinstance(tz, str) or not tz:
            raise ValueError("deadline.tz must be a time-zone name such as Europe/Berlin.")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"deadline.tz: unknown time zone {tz!r} (use an IANA name such as "
                             "Europe/Berlin).") from None
        return
    raise ValueError(f'A deadline has either "within_seconds" or "by" (with an optional "tz"); got keys '
                     f'{", ".join(sorted(map(str, keys))) or "none"}.')


def compute_deadline(spec: dict[str, Any] | None, started_at: datetime) -> datetime | None:
    """The instant (UTC) a run started at `started_at` must have finished by; None without a
    deadline. Wall-clock: the first `by` in zone `tz` strictly after the start; on a day when that
    local time does not exist (a spring-forward gap) or exists twice, zoneinfo's fold=0 reading is
    taken, as cron-style schedulers do."""
    if not spec:
        return None
    validate_deadline(spec)
    if "within_seconds" in spec:
        return (started_at + timedelta(seconds=float(spec["within_seconds"]))).astimezone(UTC)
    zone = ZoneInfo(spec.get("tz", "UTC"))
    hh, mm = (int(x) for x in spec["by"].split(":"))
    local = started_at.astimezone(zone)
    day = local.date()
    for _ in range(3):  # today, tomorrow (and one more in case a DST gap swallowed the instant)
        candidate = datetime.combine(day, time(hh, mm), tzinfo=zone).astimezone(UTC)
        if candidate > started_at:
            return candidate
        day += timedelta(days=1)
    return candidate  # unreachable in practice: tomorrow's instant is always after the start


def describe(spec: dict[str, Any] | None) -> str:
    """The deadline in words, for pages: "within 30 min of the start", "by 06:00 Europe/Berlin"."""
    if not spec:
        return ""
    if "within_seconds" in spec:
        n = float(spec["within_seconds"])
        if n >= 3600 and n % 3600 == 0:
            return f"within {int(n // 3600)} h of the start"
        if n >= 60 and n % 60 == 0:
            return f"within {int(n // 60)} min of the start"
        return f"within {n:g} s of the start"
    return f"by {spec['by']} {spec.get('tz', 'UTC')}"
