"""Two database roles (PostgreSQL): the runtime role web, workers and controllers connect as can
run the console — scale, audit, seal, verify — but cannot unhook or rewrite the audit log."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection, transaction

from audit.actions import record
from tests.conftest import ROOT, database_url, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)

TAMPERING = [
    "ALTER TABLE audit_auditentry DISABLE TRIGGER ALL",
    "DROP TRIGGER audit_no_change ON audit_auditentry",
    "TRUNCATE audit_auditentry",
    "UPDATE audit_auditentry SET actor = 'mallory'",
    "DELETE FROM audit_auditentry",
    "DELETE FROM audit_auditcheckpoint",
    "UPDATE audit_auditcheckpoint SET last_hash = ''",
    "TRUNCATE audit_auditverification",
]


@pytest.fixture
def runtime_role(demo):  # type: ignore[no-untyped-def]
    if connection.vendor != "postgresql":
        pytest.skip("two database roles are a PostgreSQL set-up (the SQLite run has one file)")
    role = f"hms_runtime_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE ROLE "{role}" LOGIN')
    call_command("grant_runtime_role", role)
    yield role
    with connection.cursor() as cursor:
        cursor.execute(f'DROP OWNED BY "{role}"')
        cursor.execute(f'DROP ROLE "{role}"')


def as_role(role: str) -> str:
    s = connection.settings_dict
    return f"postgres://{role}@{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


def test_the_runtime_role_cannot_unhook_or_rewrite_the_log(runtime_role: str) -> None:
    with transaction.atomic():
        record("test.entry", actor="system:test", target_type="test", target_id="1")
    with psycopg.connect(as_role(runtime_role), autocommit=True) as conn:
        for sql in TAMPERING:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
        # What it may do: read the log and add to it.
        assert conn.execute("SELECT count(*) FROM audit_auditentry").fetchone()[0] >= 1


def test_the_console_runs_as_the_runtime_role(runtime_role: str) -> None:
    script = (
        "from fleet.models import Service; from fleet.actions import scale_service; "
        "from audit import jobs; from audit.verify import verify_database; "
        "svc = Service.objects.get(name='HMS-SVC'); "
        "assert scale_service(svc, 0, actor='system:test', reason='runtime role').decision.allowed; "
        "jobs.seal(); result = verify_database(); assert result.ok, result.summary(); print('ok', result.checked)"
    )
    env = subprocess_env(DATABASE_URL=as_role(runtime_role))
    out = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "\nok " in out.stdout, out.stdout + out.stderr
    assert database_url() != env["DATABASE_URL"]


def test_the_command_refuses_a_superuser_or_the_owner(runtime_role: str) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="superuser"):
        call_command("grant_runtime_role", connection.settings_dict["USER"] or "postgres")
