"""The database refuses DELETE, TRUNCATE and UPDATE on the audit table, on SQLite and PostgreSQL,
with one exception: the sealer's one-time UPDATE that fills `seq`, `prev_hash`, `hash` and
`sealed_at` of an unsealed row and leaves every recorded field as it was. A sealed row can never
be updated again, and no UPDATE can change what an entry says."""

from __future__ import annotations

from django.db.backends.base.base import BaseDatabaseWrapper

TABLE = "audit_auditentry"

# What an entry says: the sealing UPDATE must leave all of these untouched.
CONTENT_COLUMNS = (
    "id", "created_at", "actor", "actor_user_id", "action", "outcome", "target_type", "target_id",
    "target_repr", "payload", "ip", "user_agent", "token_id", "request_id",
)

_sqlite_same = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in CONTENT_COLUMNS)
SQLITE_INSTALL = [
    "DROP TRIGGER IF EXISTS audit_no_update",
    f"""CREATE TRIGGER audit_no_update BEFORE UPDATE ON {TABLE}
        WHEN NOT (OLD.seq IS NULL AND NEW.seq IS NOT NULL AND NEW.hash <> '' AND {_sqlite_same})
        BEGIN SELECT RAISE(ABORT, 'audit entries are append-only (only the one-time sealing is allowed)'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END""",
]
SQLITE_UNINSTALL = ["DROP TRIGGER IF EXISTS audit_no_update", "DROP TRIGGER IF EXISTS audit_no_delete"]

_pg_new = ", ".join(f"NEW.{c}" for c in CONTENT_COLUMNS)
_pg_old = ", ".join(f"OLD.{c}" for c in CONTENT_COLUMNS)
PG_INSTALL = [
    f"""CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger AS $$
       BEGIN
         IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND NEW.seq IS NOT NULL AND NEW.hash <> ''
            AND ROW({_pg_new}) IS NOT DISTINCT FROM ROW({_pg_old}) THEN
           RETURN NEW;  -- the sealer's one-time sealing of a pending entry
         END IF;
         RAISE EXCEPTION 'audit entries are append-only (% refused)', TG_OP;
       END
       $$ LANGUAGE plpgsql""",
    f"DROP TRIGGER IF EXISTS audit_no_change ON {TABLE}",
    f"""CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON {TABLE}
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()""",
    f"DROP TRIGGER IF EXISTS audit_no_truncate ON {TABLE}",
    f"""CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON {TABLE}
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()""",
]
PG_UNINSTALL = [
    f"DROP TRIGGER IF EXISTS audit_no_change ON {TABLE}",
    f"DROP TRIGGER IF EXISTS audit_no_truncate ON {TABLE}",
]


def _run(connection: BaseDatabaseWrapper, statements: list[str]) -> None:
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


def install(connection: BaseDatabaseWrapper) -> None:
    _run(connection, PG_INSTALL if connection.vendor == "postgresql" else SQLITE_INSTALL)


def uninstall(connection: BaseDatabaseWrapper) -> None:
    """Only for test teardown (flush) and deliberate tamper tests; never called by the app."""
    _run(connection, PG_UNINSTALL if connection.vendor == "postgresql" else SQLITE_UNINSTALL)
