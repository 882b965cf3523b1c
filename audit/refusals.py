"""Bounded auditing of refusals: a flood from one source costs a counter update, not an entry.

A source is the client address plus the identity the request proved (a user or token owner;
"anonymous" otherwise). Only a proven identity is part of the key: an attacker who changes a bad
token or a username on every request must not get a new bucket, and so a new entry, each time.

For each (source, kind, minute) — kind is the status: 401, 403, 404 (an object hidden from its
caller) or 429 —
- the first refusal writes an access.refused entry as before, and opens a RefusalBucket row;
- every later one adds 1 to that row's count (one UPDATE; no entry, no chain work);
- once the minute has closed, close_buckets() (the sealer job, audit.jobs) writes one
  access.refused_repeated entry saying how many more there were, naming the first entry, and
  deletes the row. A bucket of one refusal writes nothing more.

Entries stay append-only and hash-chained: nothing is ever updated to add a count to it. Cost:
the first refusal of a minute is two INSERTs (entry, bucket), every other one UPDATE of a row of a
table that holds about a minute of sources.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from audit import events
from audit.actions import actor_label, record
from audit.context import reset_context, set_context
from audit.models import AuditEntry, RefusalBucket

log = logging.getLogger("audit.refusals")

WINDOW = timedelta(minutes=1)
CLOSE_BATCH = 500


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def record_refusal(status: int, *, actor: Any, ip: str, path: str, payload: dict[str, Any],
                   target_type: str = "", target_id: str = "", now: datetime | None = None) -> AuditEntry | None:
    """Audit one refusal, bounded per source, kind and minute. Returns the entry when this refusal
    was the first of its bucket (and so got one), else None (it was counted)."""
    name, user_id = actor_label(actor)
    key = {"minute": minute_of(now or timezone.now()), "status": int(status), "ip": str(ip)[:64], "actor": name[:150]}
    path = path[:300]
    with transaction.atomic():
        # The common case under a flood: the bucket exists, one UPDATE counts this refusal.
        if RefusalBucket.objects.filter(**key).update(count=F("count") + 1, last_path=path):
            return None
        try:
            with transaction.atomic():  # a savepoint: a concurrent first refusal may win the bucket
                entry = record(events.ACCESS_REFUSED, actor=actor, outcome=AuditEntry.Outcome.DENIED,
                               target_type=target_type, target_id=target_id,
                               payload={**payload, "bounded": "first of its kind from this source this minute"})
                RefusalBucket.objects.create(**key, actor_user_id=user_id, first_entry=entry.pk, last_path=path)
        except IntegrityError:
            # Another request opened the bucket first (its entry stands): count this one into it.
            RefusalBucket.objects.filter(**key).update(count=F("count") + 1, last_path=path)
            return None
    return entry


def close_buckets(*, now: datetime | None = None, limit: int = CLOSE_BATCH) -> int:
    """Write the summary entry of every bucket whose minute has closed and delete the bucket.
    Returns the number of summary entries written. Safe to run twice and from two sealers at once:
    deleting the row is the claim, and the entry commits with the deletion or not at all."""
    cutoff = minute_of(now or timezone.now())
    written = 0
    for bucket in list(RefusalBucket.objects.filter(minute__lt=cutoff).order_by("id")[:limit]):
        with transaction.atomic():
            claimed, _ = RefusalBucket.objects.filter(pk=bucket.pk).delete()
            if not claimed or bucket.count <= 1:
                continue  # another sealer took it, or a single refusal: its entry says it all
            token = set_context(ip=bucket.ip, user_agent="", request_id="", token_id=None, request_state=None)
            try:
                record(
                    events.ACCESS_REFUSED_REPEATED,
                    actor=bucket.actor,
                    outcome=AuditEntry.Outcome.DENIED,
                    payload={
                        "status": bucket.status,
                        events.COUNT: bucket.count - 1,
                        events.FIRST_ENTRY: bucket.first_entry,
                        "actor_user_id": bucket.actor_user_id,
                        "minute": bucket.minute.isoformat(),
                        "window_seconds": int(WINDOW.total_seconds()),
                        "last_path": bucket.last_path,
                    },
                )
            finally:
                reset_context(token)
            written += 1
    return written
