"""Database outages: which errors mean "the database is unavailable", and one process-wide record
of an outage so it is logged once, not once per request, loop pass or job.

An outage is PostgreSQL stopped, restarting or unreachable (connection refused, the server
terminating sessions, a connection found closed), or on the embedded SQLite default a write lock
held past the busy timeout ("database is locked"). Django wraps every driver's such errors as
OperationalError or InterfaceError; raw psycopg connections of our own (controller leases, the
LISTEN connection) raise psycopg's. Integrity errors, bad SQL and the like are bugs, not outages:
they keep their 500s and tracebacks.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import InterfaceError, OperationalError, connections

log = logging.getLogger("hmsmgmt.database")

try:  # psycopg is installed with the console, but the SQLite default never needs it
    import psycopg

    _RAW: tuple[type[BaseException], ...] = (psycopg.OperationalError, psycopg.InterfaceError)
except ImportError:  # pragma: no cover
    _RAW = ()

UNAVAILABLE: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, *_RAW)


def unavailable(exc: BaseException | None) -> BaseException | None:
    """The database error behind `exc` (itself, or one it was raised from or while handling), or
    None: a library may wrap the driver's error in one of its own."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, UNAVAILABLE):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def describe(exc: BaseException) -> str:
    """The driver's first line: enough to say why (refused, terminated, locked), no traceback."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no detail'}"[:300]


class Outage:
    """The process's view of the database: up, or down since a moment. `failed` logs the first
    failure of an outage (one line, no traceback); later failures are only counted until
    `recovered` logs the return with how long it lasted. Shared by every thread of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None  # monotonic start of the current outage
        self.failures = 0
        self.outages = 0  # how many this process has seen (tests, diagnostics)
        self._checked = -1e18  # monotonic time of the last probe by check()

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, where: str, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            if self.since is not None:
                return
            self.since = time.monotonic()
            self.outages += 1
        log.error("database unavailable (%s, seen by %s); retrying quietly until it is back",
                  describe(exc), where)

    def check(self, where: str, every: float = 1.0) -> None:
        """During an outage, probe at most every `every` seconds (process-wide) and log the return:
        for the web, where a request that needs no database proves nothing."""
        now = time.monotonic()
        with self._lock:
            if self.since is None or now - self._checked < every:
                return
            self._checked = now
        if probe() is None:
            self.recovered(where)

    def recovered(self, where: str) -> None:
        with self._lock:
            if self.since is None:
                return
            took, failures = time.monotonic() - self.since, self.failures
            self.since, self.failures = None, 0
        log.warning("database available again after %.1f s (%d failed attempts; back for %s)",
                    took, failures, where)


outage = Outage()


def probe(alias: str = "default") -> BaseException | None:
    """Can this thread reach the database now? None if so, else the error. A connection that died
    under us is dropped and one fresh connection tried, so a stale socket is never taken for an
    outage. Inside a transaction (tests) the connection is left alone: dropping it would break it."""
    conn = connections[alias]
    error: BaseException | None = None
    for _attempt in range(2):
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
            return None
        except UNAVAILABLE as exc:
            error = exc
            if conn.in_atomic_block:
                break
            drop(alias)
    return error


def drop(alias: str = "default") -> None:
    """Forget this thread's connection whatever state it is in: Django's close() clears it even
    when closing the socket fails, and the next query reconnects."""
    try:
        connections[alias].close()
    except Exception:  # a broken connection may fail to close; it is forgotten anyway
        pass
