"""The control loop: a death an engine reports is converged at once on the fail-over loop, even
while a (slow) tick is in progress; the tick keeps converging every service; every app's job runs
on the loop it registered for, and one failing job does not stop the others; the probe loop runs
as a process of its own (`controller --loops probes`), which `up`'s controller leaves out."""

from __future__ import annotations

import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection
from django.utils import timezone

from controller.loop import CONTROL_LOOPS, PROBE_LOOPS, Controller, loop_periods
from core import loops
from fleet import jobs, reconcile
from fleet.models import Instance, Service
from health.models import ProbeResult
from tests.conftest import service_with, wait_for


def test_each_app_registers_its_jobs_on_one_loop_each() -> None:
    by_loop = {name: [j.name for j in loops.jobs(name)] for name in loop_periods()}
    assert by_loop["tick"] == ["fleet.reconcile", "fleet.nodes", "fleet.rebalance", "workflows.promote_queued",
                               "workflows.sweep", "workflows.requeue_stranded"]
    assert by_loop["sealer"] == ["audit.seal"]  # one sealer, nowhere else
    assert by_loop["failover"] == ["fleet.failover"]
    assert by_loop["probes"] == ["health.probes"]  # alone: nothing slow shares the probes' loop
    # health rolls up before slo evaluates, in the same pass
    assert by_loop["monitor"].index("health.rollup") < by_loop["monitor"].index("slo.evaluate")
    assert {"autoscaling.evaluate", "health.prune", "slo.prune"} <= set(by_loop["monitor"])
    assert {j.loop for j in loops.jobs()} == set(loop_periods())  # no job on a loop nobody runs


def test_up_splits_the_loops_so_every_one_runs_once() -> None:
    """`up` runs CONTROL_LOOPS in the controller and PROBE_LOOPS in the probe process: together
    every loop, none twice (the probes above all: probing twice doubles their cost)."""
    assert set(CONTROL_LOOPS) | set(PROBE_LOOPS) == set(loop_periods())
    assert not set(CONTROL_LOOPS) & set(PROBE_LOOPS)
    assert tuple(Controller().loops) == tuple(loop_periods())  # a plain `controller`: all of them


def test_a_failing_job_is_logged_and_the_next_one_still_runs(monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    ran: list[str] = []
    monkeypatch.setattr(loops, "_jobs", [])
    loops.register("test", "boom", 0, lambda: 1 / 0)
    loops.register("test", "after", 0, lambda: ran.append("after"))
    loops.register("test", "rare", 3600, lambda: ran.append("rare"))
    loop = loops.Loop("test", 0.01)
    loop.run(max_passes=3)
    assert ran == ["after", "rare", "after", "after"]  # "rare" once: its period has not passed again
    assert "job boom failed" in caplog.text


def test_a_job_that_started_threads_is_closed_when_its_loop_stops(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    closed: list[str] = []

    class Threaded:
        def __call__(self) -> None:
            pass

        def close(self) -> None:
            closed.append("closed")

    monkeypatch.setattr(loops, "_jobs", [])
    loops.register("test", "threaded", 0, make=Threaded)
    loops.Loop("test", 0.01).run(max_passes=2)
    assert closed == ["closed"]


@pytest.mark.django_db(transaction=True)
def test_a_reported_death_does_not_wait_for_the_tick_in_progress(demo, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(reconcile, "start_watchers", lambda: None)
    Service.objects.update(desired_instances=1)  # every service has something to do (none at rest)
    calls: list[tuple[str, str, float]] = []

    def converge(service_id: int, *, component: str, name: str | None = None, listed: object = None) -> None:
        calls.append((name or "", threading.current_thread().name, time.monotonic()))

    monkeypatch.setattr(reconcile, "converge", converge)
    in_tick = threading.Event()
    real_call = jobs.Reconciler.__call__

    def slow_tick(self) -> None:  # type: ignore[no-untyped-def]
        real_call(self)
        in_tick.set()
        time.sleep(1.5)  # a tick busy with a slow engine call, say

    monkeypatch.setattr(jobs.Reconciler, "__call__", slow_tick)
    loop = Controller(loops=("tick", "failover"))

    def run() -> None:
        try:
            loop.run_forever(max_ticks=1)
        finally:
            connection.close()  # this thread's own connection, as the controller's process would on exit

    runner = threading.Thread(target=run)
    runner.start()
    try:
        assert in_tick.wait(10)
        ticked = {name for name, thread, _ in calls if thread == runner.name}
        assert {"HMS-SVC", "HMS-API", "analytics"} <= ticked  # the tick converges every service
        reported_at = time.monotonic()
        reconcile._urgent.put(str(Service.objects.get(name="HMS-SVC").pk))  # what the docker watcher does on a `die`
        wait_for(
            lambda: any(thread == "failover" for _n, thread, _t in calls),
            timeout=1.0,
            message="the reported service converged during the tick",
        )
        (name, _thread, at) = next(c for c in calls if c[1] == "failover")
        assert name == "HMS-SVC" and at - reported_at < 0.5
    finally:
        loop.stopping.set()
        runner.join(timeout=10)
    assert not runner.is_alive()


def test_the_tick_steps_aside_while_a_fail_over_runs_but_not_for_long() -> None:
    started = time.monotonic()
    jobs.yield_to_failover(started + 5)
    assert time.monotonic() - started < 0.05  # nothing in flight: no wait
    jobs.failing_over.set()
    threading.Timer(0.2, jobs.failing_over.clear).start()
    jobs.yield_to_failover(time.monotonic() + 5)
    assert 0.15 < time.monotonic() - started < 1.0  # until the fail-over is done
    jobs.failing_over.set()
    try:
        started = time.monotonic()
        jobs.yield_to_failover(started + 0.2)
        assert 0.15 < time.monotonic() - started < 1.0  # and never past the bound
    finally:
        jobs.failing_over.clear()


def test_the_command_refuses_an_unknown_loop_and_runs_a_chosen_one(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="unknown loop.*bogus"):
        call_command("controller", loops="bogus")
    ran: list[tuple[str, ...]] = []
    monkeypatch.setattr(Controller, "run_forever", lambda self, max_ticks=None: ran.append(tuple(self.loops)))
    call_command("controller", loops="monitor,sealer", ticks=1)
    assert ran == [("monitor", "sealer")]


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.timeout(90)
@pytest.mark.django_db(transaction=True)
def test_the_probe_loop_runs_as_a_process_of_its_own(spawn) -> None:  # type: ignore[no-untyped-def]
    """`controller --loops probes`, a real process: it probes a real endpoint at its cadence and
    stores the results; SIGTERM stops it cleanly."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        svc = service_with("probed", probe_interval_seconds=1.0)
        now = timezone.now()
        inst = Instance.objects.create(service=svc, driver="process", state=Instance.State.RUNNING,
                                       health=Instance.Health.UP, host="127.0.0.1", port=server.server_address[1],
                                       started_at=now, healthy_at=now)
        proc = spawn("controller", "--loops", "probes")
        wait_for(lambda: ProbeResult.objects.filter(instance=inst, ok=True).count() >= 3, timeout=60, interval=0.2,
                 message=f"three probes stored by the probe process; its output: {proc.output()}")
        ats = sorted(ProbeResult.objects.filter(instance=inst).values_list("at", flat=True))
        assert all(0.5 < (b - a).total_seconds() < 3.0 for a, b in zip(ats, ats[1:], strict=False)), ats
        proc.kill(signal.SIGTERM)
        assert proc.popen.wait(timeout=20) == 0
        assert "controller started: probes" in proc.output()
        assert "Traceback" not in proc.output()
    finally:
        server.shutdown()
        server.server_close()
