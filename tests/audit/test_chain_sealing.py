"""The chain: plain inserts, sealing in order, the trigger's one-time sealing exception."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, IntegrityError, connection, transaction

from audit.actions import record, scrub
from audit.chain import GENESIS, entry_hash, hashed_values
from audit.models import AuditEntry
from audit.sealer import chain_head, seal_pending
from tests.conftest import as_owner

pytestmark = pytest.mark.django_db


def _write(n: int, action: str = "test.thing") -> list[AuditEntry]:
    out = []
    for i in range(n):
        with transaction.atomic():
            out.append(record(action, actor="system:test", payload={"i": i}))
    return out


@pytest.mark.django_db(transaction=True)
def test_record_outside_a_transaction_is_refused() -> None:
    with pytest.raises(RuntimeError):
        record("x", actor="system:test")


def test_entries_are_pending_until_sealed_then_chained_in_order() -> None:
    entries = _write(3)
    assert all(AuditEntry.objects.get(pk=e.pk).seq is None for e in entries)
    assert seal_pending() == 3
    sealed = list(AuditEntry.objects.order_by("seq"))
    assert [e.pk for e in sealed] == [e.pk for e in entries]
    assert [e.seq for e in sealed] == [1, 2, 3]
    assert sealed[0].prev_hash == GENESIS
    assert sealed[1].prev_hash == sealed[0].hash
    assert sealed[2].hash == entry_hash(sealed[1].hash, hashed_values(sealed[2]))
    assert all(e.sealed_at is not None for e in sealed)
    assert chain_head() == (3, sealed[2].hash)
    assert seal_pending() == 0


def test_sealing_continues_the_chain_across_batches() -> None:
    _write(5)
    assert seal_pending(batch_size=2) == 5
    _write(2)
    assert seal_pending() == 2
    assert list(AuditEntry.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, 8))
    call_command("audit_verify")


def test_update_of_a_sealed_entry_is_refused() -> None:
    _write(1)
    seal_pending()
    with pytest.raises((DatabaseError, IntegrityError)), transaction.atomic():
        AuditEntry.objects.update(action="other")


def test_update_of_content_while_sealing_is_refused() -> None:
    (entry,) = _write(1)
    with pytest.raises((DatabaseError, IntegrityError)), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).update(seq=1, hash="f" * 64, prev_hash=GENESIS, action="forged")


def test_update_of_a_pending_entry_without_sealing_is_refused() -> None:
    (entry,) = _write(1)
    with pytest.raises((DatabaseError, IntegrityError)), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).update(payload={"i": 99})


def test_resealing_is_refused() -> None:
    _write(1)
    seal_pending()
    with pytest.raises((DatabaseError, IntegrityError)), transaction.atomic():
        AuditEntry.objects.update(seq=2)


def test_delete_is_refused() -> None:
    _write(2)
    seal_pending()
    with pytest.raises((DatabaseError, IntegrityError)), transaction.atomic():
        AuditEntry.objects.filter(seq=1).delete()
    with pytest.raises((DatabaseError, IntegrityError)), transaction.atomic():
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.count() == 2


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_truncate_is_refused_on_postgresql() -> None:
    _write(1)
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cur:
        cur.execute("TRUNCATE audit_auditentry")


def test_verify_reports_pending_entries_without_failing() -> None:
    _write(2)
    seal_pending()
    _write(1)
    from io import StringIO

    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert "intact up to seq 2" in out.getvalue()
    assert "1 pending" in out.getvalue()


def test_scrub_removes_secrets_at_any_depth() -> None:
    cleaned = scrub({"password": "x", "nested": {"api_token": "y", "ok": 1}, "list": [{"secret": "z"}],
                     "password1": "p"})
    assert cleaned == {"password": "[redacted]", "nested": {"api_token": "[redacted]", "ok": 1},
                       "list": [{"secret": "[redacted]"}], "password1": "[redacted]"}


def test_a_secret_passed_to_record_never_reaches_the_table() -> None:
    with transaction.atomic():
        record("x", actor="system:test", payload={"token": "hms_abc_SECRETVALUE", "note": "fine"})
    seal_pending()
    from audit.models import AuditEntry as E

    row = E.objects.get()
    assert "SECRETVALUE" not in str(row.payload)


def test_audit_verify_names_the_broken_seq() -> None:
    from audit import triggers

    _write(3)
    seal_pending()
    with as_owner():  # an attacker with the owner's rights
        triggers.uninstall(connection)
        try:
            AuditEntry.objects.filter(seq=2).update(payload={"i": 42})
        finally:
            triggers.install(connection)
    with pytest.raises(CommandError, match="seq 2"):
        call_command("audit_verify")


def test_verify_warns_when_no_sealer_runs() -> None:
    from datetime import timedelta

    from django.utils import timezone

    AuditEntry.objects.create(created_at=timezone.now() - timedelta(minutes=5), actor="system:test", action="old")
    from io import StringIO

    err = StringIO()
    call_command("audit_verify", stdout=StringIO(), stderr=err)
    assert "is a sealer running" in err.getvalue()
