"""The real controller process seals what concurrent writers insert: every entry gets its place
in the chain within a bounded delay, no gaps, no duplicates, and the chain verifies."""

from __future__ import annotations

import threading

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from audit.actions import record
from audit.models import AuditEntry
from tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def _writer(n: int, tag: str, errors: list[BaseException]) -> None:
    try:
        for i in range(n):
            with transaction.atomic():
                record("test.concurrent", actor=f"system:{tag}", payload={"i": i})
    except BaseException as exc:  # surfaced by the test thread
        errors.append(exc)
    finally:
        connection.close()


def test_controller_seals_concurrent_writers_in_order(spawn) -> None:
    controller = spawn("controller", HMS_AUDIT_SEAL_INTERVAL_MS="100", HMS_AUDIT_CHECKPOINT_MINUTES="0")
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_writer, args=(25, f"w{k}", errors)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert AuditEntry.objects.filter(action="test.concurrent").count() == 150
    wait_for(lambda: not AuditEntry.objects.filter(seq__isnull=True).exists(), timeout=30,
             message=f"the controller to seal every entry\n{controller.output()[-2000:]}")
    seqs = list(AuditEntry.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    call_command("audit_verify")
