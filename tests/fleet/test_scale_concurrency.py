"""Concurrent scales of one service: every request gets an answer, the count ends at one of the
requested values, and the service's audit entries read as a history, each "from" being the "to"
of the entry before it (entries are numbered in the order their changes commit)."""

from __future__ import annotations

import random
import threading

import pytest
from django.db import connection

from audit.models import AuditEntry
from audit.sealer import seal_pending
from fleet import actions
from fleet.models import Service

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_concurrent_scales_leave_a_consistent_history(demo, personas) -> None:
    pk = Service.objects.get(name="HMS-SVC").pk
    rng = random.Random(7)
    # Re-asserts of the current count mixed with changes: the case where ordering is easiest to get wrong.
    plan = [[rng.choice([0, 0, 1, 2]) for _ in range(12)] for _ in range(6)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(plan))

    def worker(counts: list[int]) -> None:
        try:
            start.wait()
            for n in counts:
                actions.scale_service(Service.objects.get(pk=pk), n, actor=personas["bob"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(counts,)) for counts in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    seal_pending()
    entries = list(AuditEntry.objects.filter(action="scale", target_id=str(pk), actor="bob").order_by("seq"))
    assert len(entries) == sum(len(c) for c in plan)
    for before, after in zip(entries, entries[1:], strict=False):
        assert after.payload["from"] == before.payload["to"], (before.seq, before.payload, after.seq, after.payload)
    assert Service.objects.get(pk=pk).desired_instances == entries[-1].payload["to"]
