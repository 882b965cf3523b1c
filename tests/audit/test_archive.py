"""Archiving: old entries copied to files with a signed manifest; the chain verifies across the
archive boundary; the database keeps every entry."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.utils import timezone

from audit import triggers
from audit.actions import record
from audit.models import AuditEntry
from audit.sealer import seal_pending
from tests.conftest import as_owner

pytestmark = pytest.mark.django_db


def _entries(n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        with transaction.atomic():
            record("test.archive", actor="system:test", payload={"i": i})
    seal_pending()


def _archive(out: Path) -> str:
    buf = StringIO()
    tomorrow = (timezone.now() + timedelta(days=1)).date()
    call_command("audit_archive", "--before", str(tomorrow), "--out", str(out), stdout=buf)
    return buf.getvalue()


def _verify(out: Path) -> str:
    buf = StringIO()
    call_command("audit_verify", "--archive", str(out), stdout=buf)
    return buf.getvalue()


def test_archives_continue_each_other_and_the_database_keeps_everything(tmp_path: Path) -> None:
    _entries(4)
    assert "archived seq 1..4" in _archive(tmp_path)
    _entries(3, start=4)
    assert "archived seq 5..7" in _archive(tmp_path)
    assert "nothing new to archive" in _archive(tmp_path)
    assert AuditEntry.objects.count() == 7
    assert "intact and linked" in _verify(tmp_path)
    second = json.loads((tmp_path / "archive-000000000005-000000000007.manifest.json").read_text())
    first = json.loads((tmp_path / "archive-000000000001-000000000004.manifest.json").read_text())
    assert second["first_prev_hash"] == first["last_hash"] == AuditEntry.objects.get(seq=5).prev_hash


def test_only_entries_before_the_date_are_archived(tmp_path: Path) -> None:
    _entries(2)
    yesterday = (timezone.now() - timedelta(days=1)).date()
    buf = StringIO()
    call_command("audit_archive", "--before", str(yesterday), "--out", str(tmp_path), stdout=buf)
    assert "nothing new" in buf.getvalue()


def test_an_altered_archive_file_is_caught(tmp_path: Path) -> None:
    _entries(3)
    _archive(tmp_path)
    data = tmp_path / "archive-000000000001-000000000003.jsonl"
    data.write_text(data.read_text().replace('"i": 1', '"i": 9'))
    with pytest.raises(CommandError, match="does not match the digest"):
        _verify(tmp_path)


def test_a_rewritten_database_boundary_is_caught(tmp_path: Path) -> None:
    _entries(3)
    _archive(tmp_path)
    _entries(1, start=3)
    with as_owner():
        triggers.uninstall(connection)
        try:
            AuditEntry.objects.filter(seq=4).update(prev_hash="f" * 64)
        finally:
            triggers.install(connection)
    with pytest.raises(CommandError, match=r"BROKEN at seq 4|seq 4 does not link"):
        _verify(tmp_path)


def test_a_forged_manifest_is_caught(tmp_path: Path) -> None:
    _entries(2)
    _archive(tmp_path)
    path = tmp_path / "archive-000000000001-000000000002.manifest.json"
    doc = json.loads(path.read_text())
    doc["count"] = 1
    path.write_text(json.dumps(doc))
    with pytest.raises(CommandError, match="signature is INVALID"):
        _verify(tmp_path)


def test_bad_date_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="not a date"):
        call_command("audit_archive", "--before", "soon", "--out", str(tmp_path))
