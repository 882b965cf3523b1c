"""One engine that hangs does not slow the others: a socket that accepts and never answers (what
a Docker daemon frozen with SIGSTOP looks like to its clients) stands for the docker engine,
while a process service's instance is killed and must still be failed over within 3 s."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings

from audit import events
from audit.models import AuditEntry
from fleet import actions, breakers, jobs, reconcile
from fleet.breakers import Breaker
from fleet.drivers import get_driver
from fleet.models import EngineState, Instance
from tests.conftest import service_with, wait_for


def test_the_breaker_backs_off_and_lets_one_trial_through() -> None:
    b = Breaker("docker")
    assert b.allow(0.0) and b.failed(0.0, "boom") and b.state == "open"
    assert not b.allow(0.5) and b.allow(1.0) and b.state == "half-open"
    assert b.failed(1.0, "boom again") and b.retry_at == 3.0  # the trial failed: open for 2 s
    for n in range(10):
        b.failed(10.0 * n, "still")
    assert b.retry_at - 90.0 == breakers.CAP_SECONDS
    assert b.succeeded() and b.state == "closed" and b.failures == 0


@pytest.fixture
def hung_docker(tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    """DOCKER_HOST pointing at a socket that accepts connections and never says a word."""
    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    get_driver.cache_clear()
    breakers._guards.clear()
    yield
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()
    get_driver.cache_clear()
    breakers._guards.clear()


@pytest.mark.django_db(transaction=True)
def test_a_hung_engine_does_not_delay_process_fail_over(hung_docker, stop_local_instances) -> None:
    web = service_with("web")
    actions.scale_service(web, 1, actor="system:test")
    assert reconcile.converge_now(web, wait=True).running == 1
    service_with("containers", driver="docker", image="x", desired_instances=1)
    tick = jobs.Reconciler()
    started = time.monotonic()
    tick()  # the first pass meets the hung engine: it waits HMS_ENGINE_WAIT_SECONDS, not 5 s
    assert time.monotonic() - started < settings.HMS_ENGINE_WAIT_SECONDS + 1.0
    assert EngineState.objects.get(engine="docker").state == "open"
    victim = web.instances.get(state=Instance.State.RUNNING)
    os.kill(int(victim.ref), signal.SIGKILL)
    killed = time.monotonic()
    period = settings.HMS_CONTROLLER_TICK_MS / 1000

    def failed_over() -> bool:
        took = time.monotonic()
        tick()
        time.sleep(max(0.0, period - (time.monotonic() - took)))
        return AuditEntry.objects.filter(action=events.FAILOVER, target_id=str(web.pk)).exists()

    wait_for(failed_over, timeout=3.0, interval=0.0, message="the process fail-over within 3 s of the kill")
    assert time.monotonic() - killed < 3.0
    wait_for(lambda: (tick() or True) and web.instances.filter(state=Instance.State.RUNNING).count() == 1,
             timeout=20, interval=0.2, message="a replacement running")
