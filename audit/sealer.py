"""The sealer: gives committed entries their chain position, in order, in batches.

Writers only INSERT (no lock, no head read), so they never queue behind one another. The sealer
is the chain's single writer: under one lock (a transaction-scoped advisory try-lock on
PostgreSQL, so a second sealer simply skips; the write lock of an IMMEDIATE transaction on SQLite)
it reads the chain head, takes the unsealed entries visible to it in insertion order, computes
seq / prev_hash / hash from the values as stored, and writes them with one UPDATE per batch. The
trigger lets exactly this one-time UPDATE through.

Run by the controller (a background thread, so a slow reconcile does not delay sealing), by
`manage.py audit_seal`, and by tests (`seal_pending()`).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit.chain import GENESIS, HASHED_FIELDS, OPTIONAL_HASHED_FIELDS, entry_hash
from audit.models import AuditEntry

log = logging.getLogger("audit.sealer")

SEAL_LOCK_KEY = 0x48_4D_53_53  # "HMSS": advisory lock id held by the one sealer at work
READ_FIELDS = ("id", *[f for f in HASHED_FIELDS if f != "seq"], *OPTIONAL_HASHED_FIELDS)


def chain_head() -> tuple[int, str]:
    """(last seq, last hash) of the sealed chain; (0, GENESIS) when nothing is sealed yet."""
    head = AuditEntry.objects.filter(seq__isnull=False).order_by("-seq").values_list("seq", "hash").first()
    return (head[0], head[1]) if head else (0, GENESIS)


def _write_batch(sealed: list[tuple[int, int, str, str]], now: Any) -> None:
    table = AuditEntry._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One statement per batch: a round trip per row would cap sealing at a few thousand/s.
            values = ", ".join(["(%s::bigint, %s::bigint, %s, %s)"] * len(sealed))
            params: list[Any] = [v for row in sealed for v in row]
            cursor.execute(
                f"UPDATE {table} AS a SET seq = v.seq, prev_hash = v.prev, hash = v.hash, sealed_at = %s "
                f"FROM (VALUES {values}) AS v(id, seq, prev, hash) WHERE a.id = v.id AND a.seq IS NULL",
                [now, *params],
            )
        else:
            cursor.executemany(
                f"UPDATE {table} SET seq = %s, prev_hash = %s, hash = %s, sealed_at = %s WHERE id = %s AND seq IS NULL",
                [(seq, prev, digest, now, pk) for pk, seq, prev, digest in sealed],
            )
        if cursor.rowcount not in (-1, len(sealed)) and connection.vendor == "postgresql":
            # Another sealer got there first despite the lock (should not happen): roll back.
            raise RuntimeError(f"sealed {cursor.rowcount} of {len(sealed)} entries; aborting batch")


def seal_batch(batch_size: int = 2000) -> int:
    """Seal up to batch_size pending entries; returns how many were sealed (0 if another sealer
    holds the lock or nothing is pending)."""
    # A plain read first: on SQLite every transaction takes the database write lock at BEGIN, and
    # an idle sealer must not take it five times a second for nothing.
    if not AuditEntry.objects.filter(seq__isnull=True).exists():
        return 0
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SEAL_LOCK_KEY])
                if not cursor.fetchone()[0]:
                    return 0  # another sealer is at work; its batch covers ours
        rows = list(
            AuditEntry.objects.filter(seq__isnull=True).order_by("id").values(*READ_FIELDS)[:batch_size]
        )
        if not rows:
            return 0
        seq, prev_hash = chain_head()
        sealed: list[tuple[int, int, str, str]] = []
        for row in rows:
            seq += 1
            row["seq"] = seq
            digest = entry_hash(prev_hash, row)
            sealed.append((row["id"], seq, prev_hash, digest))
            prev_hash = digest
        _write_batch(sealed, timezone.now())
    return len(sealed)


def seal_pending(*, batch_size: int = 2000, max_entries: int | None = None) -> int:
    """Seal everything pending now (in batches); returns the number sealed."""
    total = 0
    while max_entries is None or total < max_entries:
        n = seal_batch(batch_size)
        total += n
        if n < batch_size:
            break
    return total


def pending_count() -> int:
    return AuditEntry.objects.filter(seq__isnull=True).count()
