"""Faults on a real Docker engine, healed by the real controller process:

- `docker kill` of a container → the controller replaces it and audits `failover` with its cause;
- dockerd stopped in the middle of a scale → 503 within the deadline, desired count kept; after
  dockerd is back (started exactly as .ci/run starts it) the controller converges with no duplicate
  container, and the swarm still works.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import docker
import pytest
import requests
from django.conf import settings

from audit.models import AuditEntry
from fleet import actions
from fleet.drivers import get_driver
from fleet.drivers.base import ServiceSpec
from fleet.drivers.process import console_namespace
from fleet.models import Instance, Service
from tests.conftest import api, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.django_db(transaction=True),
              pytest.mark.timeout(240)]

DOCKERD_PIDFILE = Path("/var/run/docker.pid")
DOCKERD_LOG = "/var/log/hmsmgmt-dockerd.log"


def containers(name: str, *, all_states: bool = False) -> list[dict]:
    client = docker.from_env(timeout=5)
    try:
        return client.api.containers(all=all_states, filters={"label": [
            "hmsmgmt.managed=true", f"hmsmgmt.namespace={console_namespace()}", f"hmsmgmt.service={name}"]})
    finally:
        client.close()


def engine_up() -> bool:
    try:
        client = docker.from_env(timeout=3)
        try:
            info = client.info()
            return info.get("Swarm", {}).get("LocalNodeState") == "active" and bool(
                info.get("Swarm", {}).get("ControlAvailable"))
        finally:
            client.close()
    except Exception:
        return False


def freeze_dockerd() -> int:
    """Stop the engine answering at a known moment: a graceful shutdown takes long enough that the
    scale in flight could finish first. Frozen, every engine call hangs until its timeout."""
    pid = int(DOCKERD_PIDFILE.read_text().strip())
    os.kill(pid, signal.SIGSTOP)
    return pid


def stop_dockerd() -> None:
    pid = int(DOCKERD_PIDFILE.read_text().strip())
    os.kill(pid, signal.SIGCONT)  # harmless if it was not frozen; a frozen one cannot exit
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), timeout=60, interval=0.1,
             message="dockerd to exit")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def start_dockerd() -> None:
    # A killed dockerd leaves its pid file behind, and a new one refuses to start beside it.
    if DOCKERD_PIDFILE.exists():
        stale = DOCKERD_PIDFILE.read_text().strip()
        if not stale.isdigit() or not Path(f"/proc/{stale}").exists() or _zombie(int(stale)):
            DOCKERD_PIDFILE.unlink()
    # As .ci/run does: detached from us, logging to the same file.
    subprocess.run(["bash", "-c", f"(dockerd >{DOCKERD_LOG} 2>&1 &)"], check=True, timeout=10)
    wait_for(engine_up, timeout=90, interval=0.5, message="dockerd and the swarm to be back")


@pytest.fixture
def docker_fleet(demo, docker_cleanup, personas):  # type: ignore[no-untyped-def]
    svc = Service.objects.get(name="HMS-SVC")
    before = {"driver": svc.driver}
    svc.driver, svc.image = Service.Driver.DOCKER, settings.HMS_SAMPLE_IMAGE
    actions.save_service(svc, actor="system:test", created=False, before=before)
    return svc


def test_docker_kill_is_replaced_by_the_controller_and_audited(client, tokens, docker_fleet, spawn):
    resp = api(client, "POST", "/mgmt/scale", {"service": "HMS-SVC", "instances": 2, "wait": True},
               token=tokens["alice"])
    assert resp.status_code == 200 and resp.json()["running"] == 2, resp.content
    controller = spawn("controller")
    victim = Instance.objects.filter(service=docker_fleet, state=Instance.State.RUNNING).order_by("id").first()
    docker.from_env().api.kill(victim.ref)

    def replaced() -> bool:
        running = Instance.objects.filter(service=docker_fleet, state=Instance.State.RUNNING)
        return running.count() == 2 and victim.pk not in {i.pk for i in running}

    wait_for(replaced, timeout=30, interval=0.1, message="a healthy replacement")
    victim.refresh_from_db()
    assert victim.state == Instance.State.EXITED and "killed (SIGKILL)" in victim.exit_reason
    entry = AuditEntry.objects.get(action="failover", target_id=str(docker_fleet.pk))
    assert entry.actor == "system:controller"
    assert entry.payload["ref"] == victim.ref and "code 137" in entry.payload["cause"], entry.payload
    wait_for(lambda: len(containers("HMS-SVC", all_states=True)) == 2, timeout=10, message="the carcass removed")
    live = containers("HMS-SVC")
    assert len(live) == 2 and victim.ref not in {c["Id"][:12] for c in live}
    for inst in Instance.objects.filter(service=docker_fleet, state=Instance.State.RUNNING):
        assert requests.get(f"http://127.0.0.1:{inst.port}/health", timeout=2).status_code == 200
    assert "Traceback" not in controller.output()


def test_dockerd_stopped_mid_scale_gives_503_then_converges_without_duplicates(client, tokens, docker_fleet,
                                                                               spawn):
    assert engine_up(), "the test needs dockerd in an active swarm to begin with"
    stopper_done = threading.Event()
    answered = threading.Event()

    def stop_when_first_container_exists() -> None:
        try:
            wait_for(lambda: len(containers("HMS-SVC", all_states=True)) >= 1, timeout=30, interval=0.02,
                     message="the first container of the scale")
            freeze_dockerd()  # mid-scale: the engine stops answering now
            answered.wait(60)  # until the request has given its answer, then the engine goes away
            stop_dockerd()
        finally:
            stopper_done.set()

    stopper = threading.Thread(target=stop_when_first_container_exists, daemon=True)
    try:
        stopper.start()
        started = time.monotonic()
        resp = api(client, "POST", "/mgmt/scale", {"service": "HMS-SVC", "instances": 3, "wait": True},
                   token=tokens["alice"])
        elapsed = time.monotonic() - started
        answered.set()
        stopper_done.wait(70)
        assert resp.status_code == 503, resp.content
        body = resp.json()
        assert body["error"] == "engine_unavailable" and "desired count 3 is recorded" in body["detail"]
        assert elapsed < settings.HMS_SCALE_WAIT_SECONDS  # answered within its deadline
        docker_fleet.refresh_from_db()
        assert docker_fleet.desired_instances == 3  # the desired state is kept

        # With the engine down, further changes are refused at once, and recorded all the same.
        for count in (2, 3):
            started = time.monotonic()
            again = api(client, "POST", "/mgmt/scale", {"service": "HMS-SVC", "instances": count},
                        token=tokens["alice"])
            assert again.status_code == 503 and time.monotonic() - started < settings.HMS_SCALE_WAIT_SECONDS
            docker_fleet.refresh_from_db()
            assert docker_fleet.desired_instances == count

        controller = spawn("controller")
        # Ticks against a dead engine: it says so, keeps the desired state and does not crash.
        wait_for(lambda: "engine unreachable" in controller.output(), timeout=30, interval=0.2,
                 message="the controller to notice the engine is away")
        assert controller.popen.poll() is None
    finally:
        answered.set()  # whatever happened, never leave the engine frozen
        stopper_done.wait(90)
        if not engine_up():
            start_dockerd()

    # Back: the controller converges to exactly 3, never more, and removes what dockerd left behind.
    seen: list[int] = []

    def converged() -> bool:
        try:
            total = containers("HMS-SVC", all_states=True)
        except Exception:
            return False  # the engine is still coming up
        seen.append(len([c for c in total if c["State"] == "running"]))
        running = Instance.objects.filter(service=docker_fleet, state=Instance.State.RUNNING).count()
        return running == 3 and len(total) == 3 and all(c["State"] == "running" for c in total)

    wait_for(converged, timeout=90, interval=0.2, message="3 running containers after dockerd restart")
    assert max(seen) <= 3, f"duplicates seen: {max(seen)} running containers"
    labels = [c["Labels"]["hmsmgmt.instance"] for c in containers("HMS-SVC")]
    assert len(set(labels)) == 3

    # The swarm still works after the restart.
    spec = ServiceSpec(name="HMS-swarm-check", image=settings.HMS_SAMPLE_IMAGE)
    swarm = get_driver("swarm")
    swarm.set_replicas(spec, 1)
    try:
        wait_for(lambda: any(t.alive for t in swarm.list_instances(spec)), timeout=40, interval=0.3,
                 message="a swarm task running after the restart")
    finally:
        swarm.remove_service(spec)
