"""Schedules through the permission choke point: a schedule is visible to whoever may see its flow
(404 otherwise); acting on it takes can(user, action, schedule): its owner, an administrator, or
a user granted schedules.<action>_schedule (403 otherwise)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone

from core.permissions import can
from schedules.models import Schedule, ScheduleFire

UPCOMING = 5
LAST_FIRES = 5


def schedule_for(user: Any, pk: int, action: str = "view") -> Schedule:
    s = Schedule.objects.select_related("flow", "owner").filter(pk=pk).first()
    if s is None or not s.flow.enabled or not can(user, "view", s.flow):
        raise Http404(f"No schedule {pk}.")
    if action != "view" and not can(user, action, s):
        raise PermissionDenied(f"You may not {action} schedule {pk}: it is {s.owner.get_username()}'s.")
    return s


def of_flow(flow: Any) -> QuerySet[Schedule]:
    return Schedule.objects.filter(flow=flow).select_related("owner", "last_run").order_by("id")


def upcoming(s: Schedule, n: int = UPCOMING, now: datetime | None = None) -> list[datetime]:
    """The next n instants (UTC); the first is the schedule's own next_fire_at when it is set."""
    if not s.enabled:
        return []
    c = s.cadence()
    start = s.next_fire_at or c.after(now or timezone.now())
    return [start, *c.upcoming(start, n - 1)]


def last_fires(schedules: list[Schedule], n: int = LAST_FIRES) -> dict[int, list[ScheduleFire]]:
    """The newest n fire records of each schedule, in one query per schedule at most n rows."""
    out: dict[int, list[ScheduleFire]] = {s.pk: [] for s in schedules}
    for s in schedules:
        out[s.pk] = list(ScheduleFire.objects.filter(schedule=s).select_related("run").order_by("-scheduled_for")[:n])
    return out
