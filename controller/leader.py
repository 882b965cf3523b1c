"""Which controller process leads each loop: a lease per loop that the database arbitrates.

Several `manage.py controller` processes may run against one PostgreSQL (a plain one and a
`--loops probes` one, two plain ones on two hosts, `up`'s split): every loop (tick, monitor,
sealer, failover, probes) is led by exactly one of them at a time. A process runs the passes of the
loops it leads and stands by for the others.

PostgreSQL (`PgLease`): the lease is a session advisory lock per loop, held on a connection of its
own (raw psycopg, not Django's per-thread connection: the loop's own queries, an error in them or
close_old_connections() between passes must never end the session that holds the lock). A standby
tries the lock every HMS_LEADER_RETRY_MS. The leader's session ending is what hands the lease on:
kill -9 closes its socket and PostgreSQL frees its advisory locks at once; a host lost to the
network is freed by the server's TCP keepalives (set on the lease connection, ~11 s).

No two leaders at once, also when the leader is alive but lost its lease connection (a reset, a
restarted server, pg_terminate_backend): the leader checks the connection (`SELECT 1`) before a
pass at most every HMS_LEADER_CHECK_MS and steps down on any error (its jobs closed, the session
closed, so it holds nothing a standby waits for); a new leader waits that long plus a margin after
taking the lock before its first pass, by which time a former leader that lost its session has
seen it and stopped. What that cannot cover is a pass already under way: the jobs keep their own
guards for it (the per-service convergence lock, the sealer's lock, the audited fail-over's row
locks). A leader that is alive but stuck keeps its session and so its lease: the heartbeat rows
(beat_at) show it; no time-based expiry hands its loop to another process behind its back.

SQLite (`FileLease`, the single-host embedded default): no standby. An flock per loop and database
under VAR_DIR/locks, taken when the controller starts; a second controller for a loop already run
is refused at start (`Refused`, exit 1), so a plain `controller` next to `up`'s never runs a loop
twice either.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import psycopg
from django.conf import settings
from django.db import connection
from django.utils import timezone

from core.dberrors import outage

log = logging.getLogger(__name__)

# OPTIONS keys Django itself consumes; the rest are libpq connection parameters.
DJANGO_OPTIONS = {"isolation_level", "server_side_binding", "assume_role", "pool", "cursor_factory", "context"}
GRACE_MARGIN = 0.1  # seconds a new leader waits on top of the check period (round trips, scheduling)


class Refused(Exception):
    """Another controller runs this loop and this database cannot hand loops over (SQLite)."""


class Lease(Protocol):
    loop: str
    since: Any  # datetime | None: when this process became the loop's leader

    def leads(self) -> bool:
        """Asked before each pass; may wait (a standby waits its retry period)."""

    def release(self) -> None:
        """Give the lease up (the process stops)."""


def lock_key(loop: str) -> int:
    """The advisory lock id of a loop (a signed 64-bit int, as fleet.locks derives its ids)."""
    return int.from_bytes(hashlib.sha256(f"controller-loop:{loop}".encode()).digest()[:8], "big", signed=True)


def connect_kwargs(loop: str) -> dict[str, Any]:
    """libpq parameters of Django's default database (the test database under pytest), for a
    connection of the lease's own."""
    s = connection.settings_dict
    params: dict[str, Any] = {k: v for k, v in (s.get("OPTIONS") or {}).items() if k not in DJANGO_OPTIONS}
    params.update({"dbname": s.get("NAME"), "user": s.get("USER"), "password": s.get("PASSWORD"),
                   "host": s.get("HOST"), "port": s.get("PORT")})
    params = {k: v for k, v in params.items() if v not in (None, "")}
    # pg_stat_activity / pg_locks name the holder; keepalives on both ends: the client notices a dead
    # server (and steps down) and the server frees a vanished client's locks within ~11 s.
    params.update({
        "application_name": f"hmsmgmt controller lease {loop} pid {os.getpid()}",
        "connect_timeout": 5, "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
        "keepalives_count": 3,
        "options": f"{params.get('options', '')} -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 "
                   "-c tcp_keepalives_count=3 -c statement_timeout=5000".strip(),
    })
    return params


class PgLease:
    """A loop's lease on PostgreSQL: a session advisory lock on a connection of its own."""

    def __init__(self, loop: str, *, stop: threading.Event, retry: float | None = None,
                 check: float | None = None) -> None:
        self.loop = loop
        self.key = lock_key(loop)
        self.stop = stop
        self.retry = settings.HMS_LEADER_RETRY_MS / 1000 if retry is None else retry
        self.check = settings.HMS_LEADER_CHECK_MS / 1000 if check is None else check
        self.conn: psycopg.Connection[Any] | None = None
        self.held = False
        self.since: Any = None
        self.checked = -1e18  # monotonic time of the last successful check of the lease connection
        self.failing = False  # the connection cannot be made: logged once

    def leads(self) -> bool:
        if self.held:
            if time.monotonic() - self.checked < self.check:
                return True
            if (err := self._alive()) is None:
                return True
            self._step_down(f"its lease connection failed: {err}")
            return False
        if not self._try():
            self.stop.wait(self.retry)
            return False
        self.held, self.since = True, timezone.now()
        log.warning("%s: leading (lease taken); first pass in %.1f s", self.loop, self.check + GRACE_MARGIN)
        # A former leader whose session ended under it may still be running passes until its next
        # check: wait that out. Then check our own session (it may have died meanwhile too).
        if self.stop.wait(self.check + GRACE_MARGIN):
            return False
        self.checked = -1e18
        return self.leads()

    def _try(self) -> bool:
        try:
            if self.conn is None or self.conn.closed or self.conn.broken:
                self._close()  # a dead session holds nothing: a new one takes the lock afresh
                self.conn = psycopg.connect(**connect_kwargs(self.loop), autocommit=True)
            row = self.conn.execute("SELECT pg_try_advisory_lock(%s)", [self.key]).fetchone()
        except psycopg.Error as exc:
            if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
                # The database is down (or restarting): the process logs that once, for every loop.
                outage.failed(f"the {self.loop} lease", exc)
            elif not self.failing:
                log.warning("%s: cannot try its lease (%s); retrying every %.1f s", self.loop, exc, self.retry)
            self.failing = True
            self._close()
            return False
        if self.failing:
            self.failing = False
            outage.recovered(f"the {self.loop} lease")  # a new session answered: the database is back
        return bool(row and row[0])

    def _alive(self) -> str | None:
        """None if the lease's session answers, else why not."""
        conn = self.conn
        if conn is None or conn.closed or conn.broken:
            return "connection closed"
        try:
            conn.execute("SELECT 1")
        except psycopg.Error as exc:
            if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
                outage.failed(f"the {self.loop} lease", exc)
            return " ".join(str(exc).split())[:200] or type(exc).__name__
        self.checked = time.monotonic()
        return None

    def _step_down(self, why: str) -> None:
        # One line per loop: leadership changing hands is worth knowing even during an outage.
        log.error("%s: stepping down (%s); standing by", self.loop, why)
        self.held, self.since = False, None
        self._close()  # whatever state the session is in, it must not keep the lock for nobody

    def _close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass  # closing a broken connection: nothing left to do

    def release(self) -> None:
        if self.held:
            log.info("%s: lease released", self.loop)
        self.held, self.since = False, None
        self._close()  # ending the session frees the lock (no unlock round trip to fail)


class FileLease:
    """A loop's lease on the embedded SQLite default: an flock held for the process's lifetime."""

    def __init__(self, loop: str) -> None:
        self.loop = loop
        self.since: Any = None
        self.handle: Any = None

    @staticmethod
    def path(loop: str) -> Path:
        # Per database too: a test database and the console's own never share a lease.
        db = hashlib.sha1(str(connection.settings_dict.get("NAME")).encode()).hexdigest()[:12]
        return settings.VAR_DIR / "locks" / f"controller-{loop}-{db}.lock"

    def claim(self) -> None:
        path = self.path(self.loop)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 (held open for the process's lifetime)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise Refused(
                f"the {self.loop} loop already runs in another controller (pid {holder}) on this SQLite "
                f"database; on SQLite each loop runs in one controller only (stop the other, or pick "
                f"other --loops; PostgreSQL lets a second controller stand by)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle, self.since = handle, timezone.now()

    def leads(self) -> bool:
        return self.handle is not None

    def release(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            handle.close()  # closing the file drops the flock


def leases(loops: Iterable[str], *, stop: threading.Event) -> dict[str, Lease]:
    """A lease per loop for this database. SQLite: all claimed now, or Refused (none kept)."""
    names = list(loops)
    if connection.vendor == "postgresql":
        return {name: PgLease(name, stop=stop) for name in names}
    return claim_files(names)


def claim_files(names: Iterable[str]) -> dict[str, Lease]:
    """FileLeases for these loops, all claimed, or Refused with none kept (nothing half-started)."""
    claimed: dict[str, Lease] = {}
    try:
        for name in names:
            lease = FileLease(name)
            lease.claim()
            claimed[name] = lease
    except Refused:
        for lease in claimed.values():
            lease.release()
        raise
    return claimed
