"""The database refuses DELETE, TRUNCATE and UPDATE on the audit tables, on SQLite and PostgreSQL.

- Entries: one exception, the sealer's one-time UPDATE that fills `seq`, `prev_hash`, `hash` and
  `sealed_at` of an unsealed row and leaves every recorded field (its content hash included) as it
  was. A sealed row can never be updated again, and no UPDATE can change what an entry says.
- Checkpoints: no exception; a checkpoint is written once.
- Verifications: a queued or running verification may record its progress and result (status
  forward only, who asked and when unchanged); a finished one never changes again.

Triggers stop a role that may write the tables; they do not stop the tables' owner, who may drop
them. Hence two roles (console/management/commands/grant_runtime_role.py, docs/production.md): the
runtime role is not the owner and has no UPDATE/DELETE/TRUNCATE privilege beyond the sealing
columns and the verification progress columns."""

from __future__ import annotations

from django.db.backends.base.base import BaseDatabaseWrapper

TABLE = "audit_auditentry"
CHECKPOINTS = "audit_auditcheckpoint"
VERIFICATIONS = "audit_auditverification"

# What an entry says: the sealing UPDATE must leave all of these untouched.
CONTENT_COLUMNS = (
    "id", "created_at", "actor", "actor_user_id", "action", "outcome", "target_type", "target_id",
    "target_repr", "payload", "ip", "user_agent", "token_id", "request_id", "content_hash",
)
# What a verification may never change, and the states from which it may still record progress.
VERIFICATION_FIXED = ("id", "requested_by", "created_at")
VERIFICATION_OPEN = ("queued", "running")
_open = ", ".join(f"'{v}'" for v in VERIFICATION_OPEN)



def _sqlite_entry(columns: tuple[str, ...]) -> list[str]:
    same = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in columns)
    return [
        "DROP TRIGGER IF EXISTS audit_no_update",
        f"""CREATE TRIGGER audit_no_update BEFORE UPDATE ON {TABLE}
            WHEN NOT (OLD.seq IS NULL AND NEW.seq IS NOT NULL AND NEW.hash <> '' AND {same})
            BEGIN SELECT RAISE(ABORT, 'audit entries are append-only (only the one-time sealing is allowed)'); END""",
        f"""CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON {TABLE}
            BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END""",
    ]


_sqlite_fixed = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in VERIFICATION_FIXED)
SQLITE_OTHERS = [
    "DROP TRIGGER IF EXISTS audit_checkpoint_no_update",
    f"""CREATE TRIGGER audit_checkpoint_no_update BEFORE UPDATE ON {CHECKPOINTS}
        BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END""",
    "DROP TRIGGER IF EXISTS audit_checkpoint_no_delete",
    f"""CREATE TRIGGER audit_checkpoint_no_delete BEFORE DELETE ON {CHECKPOINTS}
        BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END""",
    "DROP TRIGGER IF EXISTS audit_verification_no_update",
    f"""CREATE TRIGGER audit_verification_no_update BEFORE UPDATE ON {VERIFICATIONS}
        WHEN NOT (OLD.status IN ({_open}) AND (OLD.status = 'queued' OR NEW.status <> 'queued') AND {_sqlite_fixed})
        BEGIN SELECT RAISE(ABORT, 'audit verifications are append-only (a finished one cannot change)'); END""",
    "DROP TRIGGER IF EXISTS audit_verification_no_delete",
    f"""CREATE TRIGGER audit_verification_no_delete BEFORE DELETE ON {VERIFICATIONS}
        BEGIN SELECT RAISE(ABORT, 'audit verifications are append-only'); END""",
]
SQLITE_UNINSTALL = [f"DROP TRIGGER IF EXISTS {name}" for name in (
    "audit_no_update", "audit_no_delete", "audit_checkpoint_no_update", "audit_checkpoint_no_delete",
    "audit_verification_no_update", "audit_verification_no_delete")]



def _pg_entry(columns: tuple[str, ...]) -> list[str]:
    new = ", ".join(f"NEW.{c}" for c in columns)
    old = ", ".join(f"OLD.{c}" for c in columns)
    return [
        f"""CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger AS $$
           BEGIN
             IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND NEW.seq IS NOT NULL AND NEW.hash <> ''
                AND ROW({new}) IS NOT DISTINCT FROM ROW({old}) THEN
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


_pg_fixed_new = ", ".join(f"NEW.{c}" for c in VERIFICATION_FIXED)
_pg_fixed_old = ", ".join(f"OLD.{c}" for c in VERIFICATION_FIXED)
PG_OTHERS = [
    """CREATE OR REPLACE FUNCTION audit_refuse_checkpoint_change() RETURNS trigger AS $$
       BEGIN
         RAISE EXCEPTION 'audit checkpoints are append-only (% refused)', TG_OP;
       END
       $$ LANGUAGE plpgsql""",
    f"DROP TRIGGER IF EXISTS audit_checkpoint_no_change ON {CHECKPOINTS}",
    f"""CREATE TRIGGER audit_checkpoint_no_change BEFORE UPDATE OR DELETE ON {CHECKPOINTS}
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_checkpoint_change()""",
    f"DROP TRIGGER IF EXISTS audit_checkpoint_no_truncate ON {CHECKPOINTS}",
    f"""CREATE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON {CHECKPOINTS}
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_checkpoint_change()""",
    f"""CREATE OR REPLACE FUNCTION audit_refuse_verification_change() RETURNS trigger AS $$
       BEGIN
         IF TG_OP = 'UPDATE' AND OLD.status IN ({_open}) AND (OLD.status = 'queued' OR NEW.status <> 'queued')
            AND ROW({_pg_fixed_new}) IS NOT DISTINCT FROM ROW({_pg_fixed_old}) THEN
           RETURN NEW;  -- a verification recording its own progress or result
         END IF;
         RAISE EXCEPTION 'audit verifications are append-only (% refused)', TG_OP;
       END
       $$ LANGUAGE plpgsql""",
    f"DROP TRIGGER IF EXISTS audit_verification_no_change ON {VERIFICATIONS}",
    f"""CREATE TRIGGER audit_verification_no_change BEFORE UPDATE OR DELETE ON {VERIFICATIONS}
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_verification_change()""",
    f"DROP TRIGGER IF EXISTS audit_verification_no_truncate ON {VERIFICATIONS}",
    f"""CREATE TRIGGER audit_verification_no_truncate BEFORE TRUNCATE ON {VERIFICATIONS}
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_verification_change()""",
]
PG_UNINSTALL = [
    f"DROP TRIGGER IF EXISTS audit_no_change ON {TABLE}",
    f"DROP TRIGGER IF EXISTS audit_no_truncate ON {TABLE}",
    f"DROP TRIGGER IF EXISTS audit_checkpoint_no_change ON {CHECKPOINTS}",
    f"DROP TRIGGER IF EXISTS audit_checkpoint_no_truncate ON {CHECKPOINTS}",
    f"DROP TRIGGER IF EXISTS audit_verification_no_change ON {VERIFICATIONS}",
    f"DROP TRIGGER IF EXISTS audit_verification_no_truncate ON {VERIFICATIONS}",
]


def _run(connection: BaseDatabaseWrapper, statements: list[str]) -> None:
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


def _content_columns(connection: BaseDatabaseWrapper) -> tuple[str, ...]:
    """CONTENT_COLUMNS that the table has now: migrations written before a column existed call
    install() too (a migration runs today's code), and must not name a column to come."""
    with connection.cursor() as cursor:
        present = {c.name for c in connection.introspection.get_table_description(cursor, TABLE)}
    return tuple(c for c in CONTENT_COLUMNS if c in present)


def install(connection: BaseDatabaseWrapper) -> None:
    columns = _content_columns(connection)
    if connection.vendor == "postgresql":
        _run(connection, _pg_entry(columns) + PG_OTHERS)
    else:
        _run(connection, _sqlite_entry(columns) + SQLITE_OTHERS)


def uninstall(connection: BaseDatabaseWrapper) -> None:
    """Only for test teardown (flush) and deliberate tamper tests; never called by the app."""
    _run(connection, PG_UNINSTALL if connection.vendor == "postgresql" else SQLITE_UNINSTALL)
