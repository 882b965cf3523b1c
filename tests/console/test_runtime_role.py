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

from audit.actions import record, request_verification
from audit.checkpoints import write_checkpoint
from audit.verify import run_verification
from tests.conftest import ROOT, as_owner, database_url, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)

# Every way to unhook or rewrite each append-only table, as the runtime role: refused for want of
# privilege (not the owner; no UPDATE/DELETE/TRUNCATE/TRIGGER grant), before any trigger runs.
TABLES = {
    "audit_auditentry": ("audit_no_change", "actor = 'mallory'"),
    "audit_auditcheckpoint": ("audit_checkpoint_no_change", "last_hash = ''"),
    "audit_auditverification": ("audit_verification_no_change", "requested_by = 'mallory'"),
}
TAMPERING = [
    sql
    for table, (trigger, change) in TABLES.items()
    for sql in (
        f"ALTER TABLE {table} DISABLE TRIGGER ALL",
        f"ALTER TABLE {table} DISABLE TRIGGER {trigger}",
        f"DROP TRIGGER {trigger} ON {table}",
        f"TRUNCATE {table}",
        f"UPDATE {table} SET {change}",
        f"DELETE FROM {table}",
        f"ALTER TABLE {table} OWNER TO CURRENT_USER",
    )
] + [
    "UPDATE audit_auditentry SET payload = '{}'",  # content: only the four sealing columns are granted
    "UPDATE audit_auditentry SET content_hash = ''",
    "DROP FUNCTION audit_refuse_change() CASCADE",
    "CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger AS $$ BEGIN RETURN NEW; END $$ LANGUAGE plpgsql",
]


@pytest.fixture
def runtime_role(demo):  # type: ignore[no-untyped-def]
    if connection.vendor != "postgresql":
        pytest.skip("two database roles are a PostgreSQL set-up (the SQLite run has one file)")
    role = f"hms_runtime_{uuid.uuid4().hex[:8]}"
    with as_owner():  # creating roles and granting is the owner's (or an administrator's) job
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE ROLE "{role}" LOGIN')
        call_command("grant_runtime_role", role)
    yield role
    with as_owner(), connection.cursor() as cursor:
        cursor.execute(f'DROP OWNED BY "{role}"')
        cursor.execute(f'DROP ROLE "{role}"')


def as_role(role: str) -> str:
    s = connection.settings_dict
    return f"postgres://{role}@{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


def test_the_runtime_role_cannot_unhook_or_rewrite_the_log(runtime_role: str, settings, tmp_path) -> None:
    settings.HMS_AUDIT_EXPORT_DIR = str(tmp_path)
    with transaction.atomic():
        record("test.entry", actor="system:test", target_type="test", target_id="1")
    write_checkpoint()
    run_verification(request_verification(actor="system:test").pk)
    refused = []
    with psycopg.connect(as_role(runtime_role), autocommit=True) as conn:
        for sql in TAMPERING:
            try:
                conn.execute(sql)
            except psycopg.errors.InsufficientPrivilege:
                refused.append(sql)
        # What it may do: read the log and add to it.
        assert conn.execute("SELECT count(*) FROM audit_auditentry").fetchone()[0] >= 1
        assert conn.execute("SELECT count(*) FROM audit_auditcheckpoint").fetchone()[0] == 1
        # Where it holds a column grant (a verification's progress), the trigger still freezes a
        # finished verification.
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("UPDATE audit_auditverification SET status = 'queued', problem = ''")
        # ...and the sealing columns of a sealed entry cannot be re-sealed.
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("UPDATE audit_auditentry SET hash = 'f' WHERE seq IS NOT NULL")
    assert refused == TAMPERING


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
    member = f"{runtime_role}_m"
    with as_owner():
        with connection.cursor() as cursor:
            cursor.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'audit_auditentry'")
            owner = cursor.fetchone()[0]
            cursor.execute(f'CREATE ROLE "{member}" LOGIN CREATEROLE')
        try:
            with pytest.raises(CommandError, match="CREATEROLE"):
                call_command("grant_runtime_role", member)
            with connection.cursor() as cursor:
                cursor.execute(f'ALTER ROLE "{member}" NOCREATEROLE')
                cursor.execute(f'GRANT "{owner}" TO "{member}"')
            with pytest.raises(CommandError, match="member of"):
                call_command("grant_runtime_role", member)
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f'DROP ROLE "{member}"')


@pytest.mark.skipif("not __import__('tests.conftest', fromlist=['x']).RUNTIME_ROLE")
def test_the_two_role_run_really_runs_as_the_runtime_role() -> None:
    """.ci/run sets HMS_TEST_RUNTIME_ROLE for the PostgreSQL run: the test's own connection and the
    processes tests start are the runtime role, which cannot rewrite the log."""
    from tests.conftest import RUNTIME_ROLE, runtime_split

    if connection.vendor != "postgresql":
        pytest.skip("two database roles are a PostgreSQL set-up")
    assert runtime_split()
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        assert cursor.fetchone()[0] == RUNTIME_ROLE
    with transaction.atomic():
        record("test.entry", actor="system:test")
    from django.db import DatabaseError

    with pytest.raises(DatabaseError, match="permission denied"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("UPDATE audit_auditentry SET actor = 'mallory'")
    with psycopg.connect(database_url(), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == RUNTIME_ROLE
