"""`manage.py healthcheck controller|worker|web` against real processes: 0 while they run, 1 with
a one-line reason once they are gone."""

from __future__ import annotations

import io
import json
import signal
import socket

import pytest
from django.core.management import call_command

from controller.models import LoopBeat
from tests.conftest import wait_for


def healthcheck(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("healthcheck", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), err.getvalue().strip()
    return 0, out.getvalue().strip()


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.django_db(transaction=True)
def test_controller_healthy_while_it_beats_unhealthy_when_killed_healthy_again_after_restart(spawn) -> None:
    loops = "tick,monitor,sealer"
    first = spawn("controller", "--loops", loops, HMS_LOG_FORMAT="json")
    wait_for(lambda: LoopBeat.objects.filter(pid=first.pid).count() == 3, timeout=60, interval=0.2,
             message="three loop beats")
    code, line = healthcheck("controller")
    assert code == 0, line
    assert line.startswith(f"ok: controller: host {socket.gethostname()}: every loop beat within"), line

    first.kill(signal.SIGKILL)  # no clean stop: its rows stay behind and go stale
    first.stop()
    code, line = wait_for(lambda: (r := healthcheck("controller", "--max-age", "2"))[0] == 1 and r, timeout=20,
                          interval=0.3, message="the killed controller's beats to go stale")
    assert "stale heartbeat" in line and f"pid {first.pid}" in line, line
    assert "\n" not in line

    second = spawn("controller", "--loops", loops)
    wait_for(lambda: healthcheck("controller", "--max-age", "2")[0] == 0, timeout=60, interval=0.3,
             message="the restarted controller to count despite the old rows")
    second.stop()  # a clean stop clears its rows; the killed one's are still there, stale
    code, line = healthcheck("controller", "--loops", "tick", "--max-age", "2")
    assert code == 1 and "stale heartbeat" in line, line
    code, line = healthcheck("controller", "--host", "no-such-host")
    assert (code, line) == (1, "unhealthy: controller: no controller loop has beaten on host no-such-host")

    # HMS_LOG_FORMAT=json reached the controller process: every line it wrote is one JSON object.
    lines = [json.loads(raw) for raw in first.log_path.read_text().splitlines() if raw.strip()]
    assert any(rec["message"].startswith("controller started") and rec["logger"] == "controller.loop"
               for rec in lines), lines


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.django_db(transaction=True)
def test_worker_round_trip_with_the_orm_broker(spawn) -> None:
    from django_q.models import OrmQ, Task

    cluster = spawn("qcluster", HMS_Q_WORKERS="1")
    code, line = wait_for(lambda: (r := healthcheck("worker", "--timeout", "20"))[0] == 0 and r, timeout=90,
                          interval=0.5, message="a task round trip")
    assert line.startswith("ok: worker: a task came back in"), line
    assert not Task.objects.exists()  # the check leaves no task history behind
    cluster.stop()
    code, line = healthcheck("worker", "--timeout", "1.5")
    assert code == 1 and "no worker ran a task within" in line, line
    assert not OrmQ.objects.exists()  # nor a task for a worker that starts later


@pytest.mark.django_db(transaction=True)
def test_web_against_a_live_server(live_server) -> None:
    code, line = healthcheck("web", "--url", f"{live_server.url}/readyz")
    assert (code, line) == (0, f"ok: web: {live_server.url}/readyz answered 200")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, line = healthcheck("web", "--url", f"http://127.0.0.1:{port}/readyz", "--timeout", "2")
    assert code == 1 and line.startswith(f"unhealthy: web: http://127.0.0.1:{port}/readyz unreachable"), line


@pytest.mark.django_db(transaction=True)
def test_web_names_what_readyz_says_is_failing(live_server, monkeypatch) -> None:
    from console import health_views

    monkeypatch.setattr(health_views, "check_broker", lambda: "ConnectionError: broker away")
    code, line = healthcheck("web", "--url", f"{live_server.url}/readyz")
    assert code == 1
    assert line == f"unhealthy: web: {live_server.url}/readyz answered 503: broker (ConnectionError: broker away)"
