"""Refusals are audited bounded per source: a flood of refused requests from one client adds an
entry for the first of each kind per minute and one summary entry with the count, not an entry
per request (audit.refusals). A 404 that hid an existing object is audited as a denied access."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from audit import events
from audit.models import AuditEntry, RefusalBucket
from audit.refusals import close_buckets
from audit.sealer import seal_pending
from audit.verify import verify_database
from tests.conftest import api

pytestmark = pytest.mark.django_db

FLOOD = 2000


def _mark() -> int:
    last = AuditEntry.objects.order_by("-id").first()
    return last.id if last else 0


def _refusals(since: int) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(id__gt=since, action__in=[events.ACCESS_REFUSED,
                                                                    events.ACCESS_REFUSED_REPEATED]).order_by("id"))


def _table_rows() -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {AuditEntry._meta.db_table}")
        return cursor.fetchone()[0]


def test_a_flood_of_unauthenticated_requests_adds_a_few_entries_and_a_count(personas) -> None:
    mark, rows_before = _mark(), _table_rows()
    client = Client(REMOTE_ADDR="203.0.113.7")
    for i in range(FLOOD):
        # A different bad token every time: only a proven identity is part of the source.
        r = api(client, "GET", "/mgmt/services", token=f"hms_bad_{i}", HTTP_USER_AGENT=f"flood/{i}")
        assert r.status_code == 401
    assert _table_rows() - rows_before <= 2  # the first of each minute (2 if the flood crossed one)
    assert RefusalBucket.objects.count() <= 2
    assert sum(RefusalBucket.objects.values_list("count", flat=True)) == FLOOD

    assert close_buckets(now=timezone.now() + timedelta(minutes=2)) >= 1
    assert close_buckets(now=timezone.now() + timedelta(minutes=2)) == 0  # safe to run twice
    assert RefusalBucket.objects.count() == 0
    entries = _refusals(mark)
    assert len(entries) <= 4 and _table_rows() - rows_before == len(entries)
    firsts = [e for e in entries if e.action == events.ACCESS_REFUSED]
    summaries = [e for e in entries if e.action == events.ACCESS_REFUSED_REPEATED]
    assert len(firsts) + sum(e.payload[events.COUNT] for e in summaries) == FLOOD
    assert {s.payload[events.FIRST_ENTRY] for s in summaries} <= {f.pk for f in firsts}
    assert all(e.ip == "203.0.113.7" and e.actor == "anonymous" and e.outcome == "denied" for e in entries)
    assert all(s.payload["status"] == 401 and s.payload["last_path"] == "/mgmt/services" for s in summaries)
    seal_pending()
    assert verify_database().ok  # summaries are ordinary chained entries


def test_each_kind_and_each_source_gets_its_own_first_entry(personas, tokens) -> None:
    mark = _mark()
    here, there = Client(REMOTE_ADDR="198.51.100.1"), Client(REMOTE_ADDR="198.51.100.2")
    for _ in range(3):
        assert api(here, "GET", "/mgmt/services", token="hms_nope_nope").status_code == 401
        assert api(there, "GET", "/mgmt/services", token="hms_nope_nope").status_code == 401
        assert api(here, "GET", "/mgmt/audit", token=tokens["dave"]).status_code == 403
        assert api(here, "GET", "/mgmt/audit", token=tokens["carol"]).status_code == 403
    expected = {("198.51.100.1", "anonymous", 401), ("198.51.100.1", "carol", 403),
                ("198.51.100.1", "dave", 403), ("198.51.100.2", "anonymous", 401)}
    firsts = [(e.ip, e.actor, e.payload["status"]) for e in _refusals(mark)]
    assert set(firsts) == expected
    assert len(firsts) <= 2 * len(expected)  # one each (two if the minute turned meanwhile)
    close_buckets(now=timezone.now() + timedelta(minutes=2))
    totals = {key: firsts.count(key) for key in expected}
    for e in _refusals(mark):
        if e.action == events.ACCESS_REFUSED_REPEATED:
            totals[(e.ip, e.actor, e.payload["status"])] += e.payload[events.COUNT]
    assert totals == dict.fromkeys(expected, 3)


def test_a_single_refusal_writes_no_summary(personas) -> None:
    mark = _mark()
    assert api(Client(), "GET", "/mgmt/services", token="hms_nope_nope").status_code == 401
    assert close_buckets(now=timezone.now() + timedelta(minutes=2)) == 0
    assert [e.action for e in _refusals(mark)] == [events.ACCESS_REFUSED]


def test_an_open_minute_is_not_closed_early(personas) -> None:
    for _ in range(3):
        api(Client(), "GET", "/mgmt/services", token="hms_nope_nope")
    assert close_buckets() == 0  # the minute is still open: later refusals still count into it
    assert RefusalBucket.objects.get().count == 3


def test_a_404_that_hides_an_existing_object_is_audited_as_denied(personas, tokens, demo) -> None:
    from fleet.models import Service

    svc = Service.objects.get(name="HMS-SVC")
    mark = _mark()
    r = api(Client(), "GET", "/mgmt/services/HMS-SVC", token=tokens["dave"])
    assert r.status_code == 404
    (entry,) = _refusals(mark)
    assert (entry.action, entry.outcome, entry.actor) == (events.ACCESS_REFUSED, "denied", "dave")
    assert (entry.target_type, entry.target_id, entry.payload["status"]) == ("fleet.service", str(svc.pk), 404)
    # Bounded like any refusal, and a name that does not exist is a plain 404, not a denial.
    for _ in range(5):
        assert api(Client(), "GET", "/mgmt/services/HMS-SVC", token=tokens["dave"]).status_code == 404
    assert api(Client(), "GET", "/mgmt/services/no-such-service", token=tokens["dave"]).status_code == 404
    assert len(_refusals(mark)) == 1
    assert RefusalBucket.objects.get(status=404).count == 6


def test_a_page_404_that_hides_an_object_is_audited_too(clients, demo) -> None:
    mark = _mark()
    r = clients["dave"].post("/services/HMS-SVC/scale/", {"instances": "1"})
    assert r.status_code == 404
    (entry,) = _refusals(mark)
    assert entry.actor == "dave" and entry.payload["status"] == 404 and entry.target_type == "fleet.service"


def test_the_sealer_job_closes_the_minute(personas) -> None:
    from audit import jobs

    for _ in range(4):
        api(Client(), "GET", "/mgmt/services", token="hms_nope_nope")
    RefusalBucket.objects.update(minute=timezone.now() - timedelta(minutes=5))
    mark = _mark()
    jobs.seal()
    (summary,) = AuditEntry.objects.filter(id__gt=mark)
    assert summary.action == events.ACCESS_REFUSED_REPEATED and summary.payload[events.COUNT] == 3
    assert summary.seq is not None  # sealed in the same pass
