"""Highly available controllers on PostgreSQL, with real processes: several `manage.py controller`
against one database lead each loop from exactly one of them; kill -9 of the leader hands its loops
to a standby within 3 s, which converges what changed meanwhile. Over repeated kills: never two
leaders at once (lease rows and pg_locks sampled throughout), no instance started twice, probes
not doubled, the audit chain sealed one sealer at a time (audit_verify passes)."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from datetime import timedelta

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection  # noqa: F401 (read by the skipif condition)

from controller import leader
from controller.loop import CONTROL_LOOPS, loop_periods
from controller.models import LoopBeat
from fleet.actions import scale_service
from fleet.drivers.process import ProcessDriver
from fleet.models import Instance, Service
from health.models import ProbeResult
from tests.conftest import database_url, service_with, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="standby controllers need PostgreSQL"),
]
LOOPS = tuple(loop_periods())
# Each test asks for stop_local_instances before spawn: fixtures tear down in reverse, so the
# controllers stop first and a leader cannot restart the instances the clean-up just stopped.
TAKEOVER_SECONDS = 3.0
PROBE_INTERVAL = 1.0


class Sampler(threading.Thread):
    """Every 50 ms, on a connection of its own: the leader rows per loop and the holders of each
    loop's advisory lock. Any moment with two of either is a violation."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.samples = 0
        self.violations: list[str] = []
        keys = {leader.lock_key(loop) & 0xFFFFFFFFFFFFFFFF: loop for loop in LOOPS}
        self.keys = {(k >> 32, k & 0xFFFFFFFF): loop for k, loop in keys.items()}

    def run(self) -> None:
        with psycopg.connect(database_url(), autocommit=True) as conn:
            while not self.stop.wait(0.05):
                rows = conn.execute("SELECT loop, count(*) FROM controller_loopbeat WHERE leader GROUP BY loop"
                                    " HAVING count(*) > 1").fetchall()
                self.violations += [f"{n} leader rows for {loop}" for loop, n in rows]
                locks = Counter(self.keys.get((c, o)) for c, o in conn.execute(
                    "SELECT classid::bigint, objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
                            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"))
                self.violations += [f"{n} holders of {loop}" for loop, n in locks.items() if loop and n > 1]
                self.samples += 1


def leaders() -> dict[str, int]:
    return dict(LoopBeat.objects.filter(leader=True).values_list("loop", "pid"))


def lock_holders() -> dict[str, int]:
    """Loop → the OS pid of the process holding its lock (named in the lease's application_name)."""
    keys = {(k >> 32, k & 0xFFFFFFFF): loop
            for loop in LOOPS for k in [leader.lock_key(loop) & 0xFFFFFFFFFFFFFFFF]}
    with psycopg.connect(database_url(), autocommit=True) as conn:
        rows = conn.execute("SELECT l.classid::bigint, l.objid::bigint, a.application_name FROM pg_locks l "
                            "JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' AND l.granted"
                            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")
        return {keys[(c, o)]: int(app.rsplit(" ", 1)[1]) for c, o, app in rows if (c, o) in keys}


def all_led_by(pid: int) -> bool:
    return leaders() == dict.fromkeys(LOOPS, pid)


def probe_rate_ok(svc: Service) -> None:
    """No instance probed more often than its interval allows (two probe loops would double it):
    at most 5/interval + 2 results in any 5 s (a takeover probes anew within its first second)."""
    for inst in svc.instances.all():
        ats = sorted(ProbeResult.objects.filter(instance=inst).values_list("at", flat=True))
        for i, at in enumerate(ats):
            window = sum(1 for b in ats[i:] if b - at < timedelta(seconds=5))
            assert window <= 5 / PROBE_INTERVAL + 2, f"instance {inst.pk}: {window} probes within 5 s"


@pytest.mark.timeout(300)
def test_two_controllers_one_leader_per_loop_and_kill_9_hands_over(stop_local_instances, spawn) -> None:
    svc = service_with("ha", probe_interval_seconds=PROBE_INTERVAL)
    first, second = spawn("controller"), spawn("controller")
    sampler = Sampler()
    sampler.start()
    try:
        wait_for(lambda: set(leaders()) == set(LOOPS), timeout=60, interval=0.1,
                 message=f"every loop led; outputs: {first.output()}{second.output()}")
        pids = {first.pid, second.pid}
        assert set(leaders().values()) <= pids
        wait_for(lambda: lock_holders() == leaders(), timeout=5, message="the lock holders are the leader rows")
        # Every process has a row for every loop: one leads it, the other stands by (the second
        # process may still be starting when the first already leads everything: wait for it).
        expected = {**{(loop, True): 1 for loop in LOOPS}, **{(loop, False): 1 for loop in LOOPS}}
        wait_for(lambda: Counter(LoopBeat.objects.filter(pid__in=pids).values_list("loop", "leader")) == expected,
                 timeout=30, interval=0.1, message=f"a leader and a standby row per loop; outputs: {second.output()}")

        procs = {first.pid: first, second.pid: second}
        takeovers: list[float] = []
        for round_ in range(1, 6):
            victim = procs.pop(leaders()["tick"])
            (survivor,) = procs.values()
            victim.kill(signal.SIGKILL)
            killed = time.monotonic()
            victim.popen.wait(timeout=10)
            # Meanwhile, a scale: the new leader must start exactly this one instance.
            assert scale_service(svc, round_, actor="system:test").decision.allowed
            wait_for(lambda survivor=survivor: all_led_by(survivor.pid), timeout=10, interval=0.02,
                     message=f"the standby to lead every loop; its output: {survivor.output()}")
            takeovers.append(time.monotonic() - killed)
            wait_for(lambda n=round_: Instance.objects.filter(service=svc, state=Instance.State.RUNNING).count() == n,
                     timeout=30, interval=0.1, message=f"{round_} running instance(s) after the takeover")
            assert lock_holders() == dict.fromkeys(LOOPS, survivor.pid)
            fresh = spawn("controller")  # back to two: the next kill has a standby
            procs[fresh.pid] = fresh
            wait_for(lambda fresh=fresh: LoopBeat.objects.filter(pid=fresh.pid, leader=False).count() == len(LOOPS),
                     timeout=60, interval=0.1, message=f"the new standby; its output: {fresh.output()}")
        print(f"takeovers after kill -9: {', '.join(f'{t:.2f}' for t in takeovers)} s")
        assert max(takeovers) <= TAKEOVER_SECONDS, takeovers
        time.sleep(2)  # a few more probes and seals under the last leader
    finally:
        sampler.stop.set()
        sampler.join(timeout=5)
    assert sampler.samples > 100 and not sampler.violations, sampler.violations[:10]
    # No instance started twice: one Instance row per scale step, all running, one live process each.
    instances = list(Instance.objects.filter(service=svc).values_list("state", flat=True))
    assert instances == [Instance.State.RUNNING] * 5, instances
    live = [o for o in ProcessDriver().list_instances(svc.spec()) if o.alive]
    assert len(live) == 5, live
    probe_rate_ok(svc)
    assert ProbeResult.objects.filter(instance__service=svc).exists()
    call_command("audit_verify")  # exits (SystemExit) on a broken chain
    for proc in procs.values():
        assert "Traceback" not in proc.output(), proc.output()


@pytest.mark.timeout(240)
def test_up_split_beside_a_plain_controller_runs_each_loop_once(stop_local_instances, spawn) -> None:
    """`up`'s two processes and a plain `controller` next to them: the probe loop is led by one
    process only (probes not doubled); kill -9 of its leader hands it to the other."""
    svc = service_with("ha", probe_interval_seconds=PROBE_INTERVAL)
    assert scale_service(svc, 2, actor="system:test").decision.allowed
    control = spawn("controller", "--loops", ",".join(CONTROL_LOOPS))
    probes = spawn("controller", "--loops", "probes")
    wait_for(lambda: set(leaders()) == set(LOOPS), timeout=60, interval=0.1,
             message=f"every loop led; outputs: {control.output()}{probes.output()}")
    plain = spawn("controller")  # started last: it stands by for every loop
    wait_for(lambda: LoopBeat.objects.filter(pid=plain.pid).count() == len(LOOPS), timeout=60, interval=0.1,
             message=f"the plain controller's rows; its output: {plain.output()}")
    assert leaders() == {**dict.fromkeys(CONTROL_LOOPS, control.pid),
                         "probes": probes.pid}
    wait_for(lambda: Instance.objects.filter(service=svc, state=Instance.State.RUNNING).count() == 2, timeout=30,
             interval=0.1, message="two running instances")
    time.sleep(4)  # probes under the first leader
    probes.kill(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: leaders().get("probes") == plain.pid, timeout=10, interval=0.02,
             message="the plain controller to lead the probe loop")
    took = time.monotonic() - killed
    assert took <= TAKEOVER_SECONDS, took
    assert leaders() == {**dict.fromkeys(CONTROL_LOOPS, control.pid),
                         "probes": plain.pid}  # the others stay where they were
    started = ProbeResult.objects.filter(instance__service=svc).count()
    wait_for(lambda: ProbeResult.objects.filter(instance__service=svc).count() >= started + 4, timeout=15,
             interval=0.2, message="probes by the new leader")
    time.sleep(4)
    probe_rate_ok(svc)
    call_command("audit_verify")
