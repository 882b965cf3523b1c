from __future__ import annotations

from typing import Any

from schedules import selectors
from schedules.models import Schedule, ScheduleFire

# The API's names of the model's fields (errors name the field as the caller spelled it).
API_NAMES = {"name": "name", "cron": "cron", "interval_seconds": "intervalSeconds", "interval": "intervalSeconds",
             "timezone": "timezone", "data": "data", "enabled": "enabled", "missed_policy": "missedPolicy",
             "missed_bound": "missedBound", "overlap_policy": "overlapPolicy", "deadline": "deadline",
             "owner": "owner"}
MODEL_NAMES = {v: k for k, v in API_NAMES.items() if k != "interval"}


def fire_out(f: ScheduleFire) -> dict[str, Any]:
    return {"scheduledFor": f.scheduled_for, "firedAt": f.fired_at, "outcome": f.outcome, "runId": f.run_id,
            "reason": f.reason}


def schedule_out(s: Schedule, fires: list[ScheduleFire] | None = None) -> dict[str, Any]:
    c = s.cadence()
    return {
        "id": s.pk, "flowId": s.flow.slug, "name": s.name, "cron": s.cron or None,
        "intervalSeconds": s.interval_seconds, "timezone": s.timezone, "data": s.data,
        "owner": s.owner.get_username(), "enabled": s.enabled, "missedPolicy": s.missed_policy,
        "missedBound": s.missed_bound, "overlapPolicy": s.overlap_policy, "deadline": s.deadline,
        "nextFireAt": s.next_fire_at,
        "upcoming": [{"utc": t, "local": c.local(t).isoformat()} for t in selectors.upcoming(s)],
        "lastFire": None if not s.last_outcome else {
            "scheduledFor": s.last_fire_at, "outcome": s.last_outcome, "reason": s.last_reason,
            "runId": s.last_run_id},
        "fires": [fire_out(f) for f in fires or []],
    }
