"""The controller's "schedules" loop jobs: fire what is due, release held fires, prune records.
Safe to run twice and from two processes at once: every fire is claimed by a conditional update."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from core.dberrors import unavailable
from schedules import actions
from schedules.models import Schedule, ScheduleFire

log = logging.getLogger(__name__)
_failing: set[int] = set()  # schedules whose fire failed last time: logged once, not every pass


def fire_due() -> int:
    """One pass: each enabled schedule whose next instant has come is claimed and fired; then each
    held fire whose previous run has finished starts. Returns the number of fire records written."""
    now = timezone.now()
    grace = timedelta(milliseconds=settings.HMS_SCHEDULE_GRACE_MS)
    written = 0
    due = Schedule.objects.filter(enabled=True, next_fire_at__lte=now).select_related("flow", "owner")
    for s in due:
        assert s.next_fire_at is not None
        try:
            written += len(actions.fire(s, s.next_fire_at, now=now, grace=grace).fires)
            _failing.discard(s.pk)
        except Exception as exc:
            if unavailable(exc) is not None:
                raise  # an outage: the loop probes until the database is back
            if s.pk not in _failing:  # one broken schedule never stops the others' fires
                _failing.add(s.pk)
                log.exception("schedule %s: firing failed", s.pk)
    held = ScheduleFire.objects.filter(outcome=ScheduleFire.Outcome.HELD).select_related(
        "schedule__flow", "schedule__owner")
    for f in held:
        if actions.release_held(f) is not None:
            written += 1
    return written


def prune() -> int:
    """Keep each schedule's newest HMS_SCHEDULE_FIRES_KEPT fire records (a held one always stays)."""
    keep = settings.HMS_SCHEDULE_FIRES_KEPT
    removed = 0
    for sid in (ScheduleFire.objects.values("schedule_id").annotate(n=Count("id")).filter(n__gt=keep)
                .values_list("schedule_id", flat=True)):
        cut = list(ScheduleFire.objects.filter(schedule_id=sid).order_by("-scheduled_for")
                   .values_list("scheduled_for", flat=True)[keep:keep + 1])
        if cut:
            removed += ScheduleFire.objects.filter(schedule_id=sid, scheduled_for__lte=cut[0]).exclude(
                outcome=ScheduleFire.Outcome.HELD).delete()[0]
    return removed
