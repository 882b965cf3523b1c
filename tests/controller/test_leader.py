"""Leadership of the controller's loops (controller.leader), in one process: a lease per loop that
PostgreSQL arbitrates (one holder; the other takes over when the holder's session ends; a leader
whose lease connection fails steps down before a standby's first pass); a standby runs no pass and
keeps no job state; on SQLite a second controller for a loop is refused at start."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from django.db import connection

from controller import leader
from controller.loop import Beat, Controller
from controller.models import LoopBeat
from core import loops
from tests.conftest import ROOT, subprocess_env, wait_for

pg_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="leases hand over on PostgreSQL only")


def holders(loop: str) -> list[int]:
    """Backend pids holding the loop's advisory lock, from pg_locks (64-bit keys: classid, objid)."""
    key = leader.lock_key(loop) & 0xFFFFFFFFFFFFFFFF
    with psycopg.connect(**leader.connect_kwargs("probe-of-test"), autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                            "AND classid = %s AND objid = %s "
                            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                            [key >> 32, key & 0xFFFFFFFF]).fetchall()
    return [pid for (pid,) in rows]


def fast(loop: str, stop: threading.Event | None = None) -> leader.PgLease:
    return leader.PgLease(loop, stop=stop or threading.Event(), retry=0.05, check=0.1)


@pg_only
@pytest.mark.django_db(transaction=True)
def test_one_holder_per_loop_and_the_standby_takes_over_when_its_session_ends() -> None:
    first, second = fast("test-loop"), fast("test-loop")
    other_loop = fast("test-other")
    try:
        assert first.leads() and first.since is not None
        assert not second.leads() and second.since is None  # held: it stands by
        assert other_loop.leads()  # a lease per loop: another loop is led independently
        assert holders("test-loop") == [first.conn.info.backend_pid]
        first.conn.close()  # the session ends (as kill -9 of its process ends it)
        started = time.monotonic()
        wait_for(second.leads, timeout=2, message="the standby to lead")
        assert time.monotonic() - started >= 0.1  # it waited a former leader's check period out
        assert holders("test-loop") == [second.conn.info.backend_pid]
    finally:
        for lease in (first, second, other_loop):
            lease.release()
    assert holders("test-loop") == []  # released: its session ended


@pg_only
@pytest.mark.django_db(transaction=True)
def test_a_leader_whose_lease_connection_fails_steps_down_within_its_check_period() -> None:
    lease, standby = fast("test-loop"), fast("test-loop")
    try:
        assert lease.leads()
        with psycopg.connect(**leader.connect_kwargs("killer"), autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", [lease.conn.info.backend_pid])
        lost_at = time.monotonic()
        wait_for(lambda: not lease.leads(), timeout=1, interval=0.01, message="the leader to step down")
        stepped_down = time.monotonic() - lost_at
        assert stepped_down <= lease.check + 0.05 and lease.conn is None  # its session closed: it holds nothing
        took = time.monotonic()
        wait_for(standby.leads, timeout=2, message="the standby to lead")
        # The standby's first pass comes after the check period plus the margin: by then the
        # former leader had seen its connection fail and stopped.
        assert time.monotonic() - took >= standby.check
    finally:
        lease.release()
        standby.release()


@pg_only
@pytest.mark.django_db(transaction=True)
def test_the_lease_survives_the_loop_closing_its_django_connection() -> None:
    lease = fast("test-loop")
    try:
        assert lease.leads()
        connection.close()  # what close_old_connections() or a failed query of a job can do
        time.sleep(0.15)
        assert lease.leads() and holders("test-loop") == [lease.conn.info.backend_pid]
    finally:
        lease.release()


def test_a_standby_runs_no_pass_and_keeps_no_job_state(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    built: list[str] = []
    closed: list[str] = []
    ran: list[int] = []

    class Stateful:
        def __init__(self) -> None:
            built.append("built")

        def __call__(self) -> None:
            ran.append(1)

        def close(self) -> None:
            closed.append("closed")

    monkeypatch.setattr(loops, "_jobs", [])
    loops.register("test", "stateful", 0, make=Stateful)
    roles = iter([True, True, False, False, True, True])
    loop = loops.Loop("test", 0.0, leads=lambda: next(roles))
    loop.run(max_passes=4)
    # Led two passes, stood by twice (jobs closed once, nothing run), led again with a new job.
    assert (len(ran), built, closed) == (4, ["built", "built"], ["closed", "closed"])


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_rows_say_who_leads_and_a_new_leader_clears_the_former_one(demo) -> None:  # type: ignore[no-untyped-def]
    from django.utils import timezone

    now = timezone.now()
    LoopBeat.objects.create(host="gone", pid=1, loop="tick", started_at=now, beat_at=now, last_pass_ms=1,
                            leader=True, since=now)  # left by a killed leader
    controller = Controller(loops=("tick",))
    controller.run_forever(max_ticks=1)  # leads (nothing else holds it), then stops and clears its row
    row = LoopBeat.objects.get(host="gone")
    assert not row.leader  # the former leader's row no longer says so
    beat = Beat("tick")
    beat.role(True, now)
    mine = LoopBeat.objects.get(loop="tick", pid=os.getpid())
    assert (mine.leader, mine.since) == (True, now)
    beat.role(False)
    mine.refresh_from_db()
    assert (mine.leader, mine.since) == (False, None)
    beat.clear()


def test_sqlite_leases_are_claimed_all_or_none(tmp_path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.VAR_DIR = tmp_path
    held = leader.FileLease("monitor")
    held.claim()
    try:
        with pytest.raises(leader.Refused, match=f"monitor loop already runs in another controller .pid {os.getpid()}"):
            leader.claim_files(["tick", "monitor"])
        again = leader.FileLease("tick")
        again.claim()  # the partial claim of "tick" was given back
        again.release()
    finally:
        held.release()
    leader.FileLease("monitor").claim()  # released: free again


@pytest.mark.timeout(60)
@pytest.mark.skipif("connection.vendor == 'postgresql'", reason="on PostgreSQL a second controller stands by")
@pytest.mark.django_db(transaction=True)
def test_on_sqlite_a_second_controller_for_a_loop_already_run_refuses_to_start() -> None:
    """A real `manage.py controller` while this process runs the probe loop: exit 1, saying why."""
    probes = leader.FileLease("probes")
    probes.claim()  # what a `controller --loops probes` beside it holds
    try:
        out = subprocess.run([sys.executable, str(ROOT / "manage.py"), "controller"], env=subprocess_env(), cwd=ROOT,
                             capture_output=True, text=True, timeout=45)
    finally:
        probes.release()
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"the probes loop already runs in another controller (pid {os.getpid()})" in out.stderr
    assert "Traceback" not in out.stderr
    assert not LoopBeat.objects.exists()  # it ran nothing
