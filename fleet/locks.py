"""Per-service convergence lock, so two convergers (web, controller) never start duplicates.

PostgreSQL: a session-level advisory lock (works across hosts sharing the database). SQLite (the
single-host embedded default): an flock on a file under var/, which does not hold the database
write lock while an engine call is slow.
"""

from __future__ import annotations

import fcntl
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection


class LockTimeout(Exception):
    pass


def _lock_id(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"converge:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def service_lock(service_id: int, *, timeout: float = 30.0) -> Iterator[None]:
    """Held by the service's id, not its name: a rename while a converge runs must not let a
    second converger in under the new name."""
    name = f"service:{service_id}"
    deadline = time.monotonic() + timeout
    if connection.vendor == "postgresql":
        lock_id = _lock_id(name)
        with connection.cursor() as cursor:
            while True:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [lock_id])
                if cursor.fetchone()[0]:
                    break
                if time.monotonic() > deadline:
                    raise LockTimeout(f"another converger holds {name}")
                time.sleep(0.02)
        try:
            yield
        finally:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [lock_id])
            except Exception:
                # The connection is broken (say, a query interrupted by SIGTERM). Raising here would
                # replace the exception on its way out (a KeyboardInterrupt would become a database
                # error the controller shrugs off, forever); closing the connection ends the session,
                # which releases every advisory lock it held.
                connection.close()
        return
    lock_dir = settings.VAR_DIR / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{hashlib.sha1(name.encode()).hexdigest()}.lock", "w") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(f"another converger holds {name}") from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
