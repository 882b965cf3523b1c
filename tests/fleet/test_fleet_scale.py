"""Correctness at fleet size, with real processes: 300 services converge from 0 to 1 instance
each through the controller's tick, and a process killed among them is failed over within 3 s
(the tick at its real period). Instances are busybox's httpd: a real process and a real /health
endpoint for a few hundred kB each."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from django.conf import settings

from audit import events
from audit.models import AuditEntry
from fleet import jobs
from fleet.models import Instance, Service
from tests.conftest import service_with

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
FLEET = 300
PERIOD = settings.HMS_CONTROLLER_TICK_MS / 1000


@pytest.fixture
def httpd_root(tmp_path: Path) -> Path:
    if shutil.which("busybox") is None:
        pytest.fail("busybox (Debian's busybox-static) is needed for the fleet-size tests")
    (tmp_path / "health").write_text('{"status":"ok"}')
    return tmp_path


def test_three_hundred_services_converge_and_a_death_is_still_caught_fast(httpd_root, stop_local_instances) -> None:
    command = f"busybox httpd -f -p 127.0.0.1:{{port}} -h {httpd_root}"
    for i in range(FLEET):
        service_with(f"fleet-{i:03d}", command=command, desired_instances=1)
    tick = jobs.Reconciler()
    started = time.monotonic()
    while Instance.objects.filter(state=Instance.State.RUNNING).count() < FLEET:
        assert time.monotonic() - started < 180, "300 services did not converge within 3 minutes"
        tick()
    converge_seconds = time.monotonic() - started
    passes = []
    for _ in range(5):
        took = time.monotonic()
        tick()
        passes.append(time.monotonic() - took)
    assert tick.last_pass["at_rest"] == FLEET, tick.last_pass
    assert Service.objects.filter(desired_instances=1).count() == FLEET

    victim = Instance.objects.filter(state=Instance.State.RUNNING).order_by("?").first()
    os.kill(int(victim.ref), signal.SIGKILL)
    killed = time.monotonic()
    while not AuditEntry.objects.filter(action=events.FAILOVER).exists():
        assert time.monotonic() - killed < 3.0, "a dead instance among 300 was not failed over within 3 s"
        took = time.monotonic()
        tick()
        time.sleep(max(0.0, PERIOD - (time.monotonic() - took)))  # the controller's own cadence
    entry = AuditEntry.objects.get(action=events.FAILOVER)
    assert entry.payload["ref"] == victim.ref
    print(f"converged {FLEET} services in {converge_seconds:.1f} s; a tick at rest {min(passes) * 1000:.0f} ms; "
          f"death caught after {time.monotonic() - killed:.2f} s")
