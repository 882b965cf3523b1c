"""The control loop: a death an engine reports is converged at once on the fail-over thread, even
while a (slow) tick is in progress; the tick keeps converging every service."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from hmsmgmt import controller as controller_module
from services import reconcile
from tests.conftest import wait_for


@pytest.mark.django_db(transaction=True)
def test_a_reported_death_does_not_wait_for_the_tick_in_progress(demo, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(controller_module.monitoring, "start_in_background", lambda: None)
    monkeypatch.setattr(
        controller_module.audit_sealer, "BackgroundSealer", lambda: type("Idle", (), {"start": lambda self: None})()
    )
    monkeypatch.setattr(reconcile, "start_watchers", lambda: None)
    calls: list[tuple[str, str, float]] = []

    def converge(service_id: int, *, component: str, name: str | None = None) -> None:
        calls.append((name or "", threading.current_thread().name, time.monotonic()))

    monkeypatch.setattr(reconcile, "converge", converge)
    in_tick = threading.Event()
    real_tick = controller_module.Controller.tick

    def slow_tick(self) -> None:  # type: ignore[no-untyped-def]
        real_tick(self)
        in_tick.set()
        time.sleep(1.5)  # a tick busy with a slow engine call, say

    monkeypatch.setattr(controller_module.Controller, "tick", slow_tick)
    loop = controller_module.Controller()

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
        reconcile._urgent.put("HMS-SVC")  # what the docker watcher does on a `die` event
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
    loop = controller_module.Controller()
    started = time.monotonic()
    loop._yield_to_failover(started + 5)
    assert time.monotonic() - started < 0.05  # nothing in flight: no wait
    loop.failing_over.set()
    threading.Timer(0.2, loop.failing_over.clear).start()
    loop._yield_to_failover(time.monotonic() + 5)
    assert 0.15 < time.monotonic() - started < 1.0  # until the fail-over is done
    loop.failing_over.set()
    started = time.monotonic()
    loop._yield_to_failover(started + 0.2)
    assert 0.15 < time.monotonic() - started < 1.0  # and never past the bound
