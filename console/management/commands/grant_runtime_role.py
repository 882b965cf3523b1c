"""Grant the runtime database role what web, workers and controllers need, and no more.

Two roles on PostgreSQL (README "Run in production"): the *owner* role owns the tables and runs
`manage.py migrate` (and this command, after every migrate: new tables need their grants); the
*runtime* role, in DATABASE_URL of web, workers and controllers, is not the owner, so it cannot
ALTER, DISABLE TRIGGER or DROP TRIGGER on anything, and on the audit tables it may only add:
- audit_auditentry: SELECT, INSERT, and UPDATE of the four sealing columns only (seq, prev_hash,
  hash, sealed_at; the append-only trigger refuses any other change and any second sealing);
- audit_auditcheckpoint: SELECT, INSERT;
- audit_auditverification: SELECT, INSERT, and UPDATE of its progress columns only (status,
  counts, result; the trigger lets a queued or running one progress and freezes a finished one);
no DELETE, TRUNCATE or TRIGGER on any of them. Every other table (audit_refusalbucket, a working
counter, included): SELECT, INSERT, UPDATE, DELETE.

The role must not be a superuser, must not own the tables or be a member of their owner (a member
has the owner's rights), and must not have CREATEROLE (which could make it such a member).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

AUDIT_ONLY_ADD = {
    "audit_auditentry": "SELECT, INSERT",
    "audit_auditcheckpoint": "SELECT, INSERT",
    "audit_auditverification": "SELECT, INSERT",
}
SEALING_COLUMNS = ("seq", "prev_hash", "hash", "sealed_at")
VERIFICATION_PROGRESS = ("status", "finished_at", "checked", "last_seq", "bad_seq", "pending", "problem")


def statements(role: str) -> list[str]:
    quoted = connection.ops.quote_name(role)
    out = [
        f"GRANT USAGE ON SCHEMA public TO {quoted}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {quoted}",
    ]
    for table, allowed in AUDIT_ONLY_ADD.items():
        out += [f"REVOKE ALL ON {table} FROM {quoted}", f"GRANT {allowed} ON {table} TO {quoted}"]
    out.append(f"GRANT UPDATE ({', '.join(SEALING_COLUMNS)}) ON audit_auditentry TO {quoted}")
    out.append(f"GRANT UPDATE ({', '.join(VERIFICATION_PROGRESS)}) ON audit_auditverification TO {quoted}")
    return out


class Command(BaseCommand):
    help = "Grant a (non-owner) PostgreSQL role the runtime privileges: run as the owner after migrate."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("role", help="the runtime role (it must exist and must not own the tables)")

    def handle(self, *args: Any, role: str, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("two database roles are a PostgreSQL set-up; SQLite has one file and no roles")
        with connection.cursor() as cursor:
            cursor.execute("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = %s", [role])
            found = cursor.fetchone()
            if found is None:
                raise CommandError(f"no role {role!r}: CREATE ROLE {role} LOGIN PASSWORD '…' first")
            if found[0]:
                raise CommandError(f"{role!r} is a superuser: a runtime role must not be (it could unhook the log)")
            if found[1]:
                raise CommandError(f"{role!r} has CREATEROLE: a runtime role must not (it could join the owner role)")
            cursor.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'audit_auditentry'")
            owner = cursor.fetchone()
            if owner and owner[0] == role:
                raise CommandError(f"{role!r} owns the tables: use another role at run time")
            if owner:
                cursor.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", [role, owner[0]])
                if cursor.fetchone()[0]:
                    raise CommandError(f"{role!r} is a member of {owner[0]!r}, which owns the tables: "
                                       "a member has the owner's rights (REVOKE the membership)")
            for sql in statements(role):
                cursor.execute(sql)
        self.stdout.write(f"granted the runtime privileges to {role}")
