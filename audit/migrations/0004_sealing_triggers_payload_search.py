from django.db import migrations

# Full-text search in payloads on PostgreSQL: a GIN index on the same expression audit.filters
# queries, so a search stays an index scan at millions of rows. SQLite searches with LIKE.
PG_FTS = (
    "CREATE INDEX IF NOT EXISTS audit_payload_fts ON audit_auditentry "
    "USING gin (jsonb_to_tsvector('simple', payload, '[\"string\", \"numeric\", \"key\"]'))"
)


def forwards(apps, schema_editor):
    from audit.triggers import install

    install(schema_editor.connection)
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(PG_FTS)


def backwards(apps, schema_editor):
    from audit.triggers import uninstall

    uninstall(schema_editor.connection)
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("DROP INDEX IF EXISTS audit_payload_fts")


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_sealed_chain_checkpoints")]
    operations = [migrations.RunPython(forwards, backwards)]
