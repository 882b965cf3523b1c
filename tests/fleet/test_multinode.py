"""The console on a real three-node Swarm (tests/swarmlab.py: three dockerd daemons, each in its
own network namespace): replicas spread over the nodes and probed at their node's address, a
worker node killed hard and its replicas rescheduled (fail-over audited naming the node), the node
back and the service rebalanced without dropping below desired, and a node drained from the API.

One lab for the module (≈ 3 s to make, ≈ 7 s to remove); the controller runs as in production,
pointed at the lab's manager. Every wait is bounded."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
import requests
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from audit.models import AuditEntry
from fleet import actions
from fleet.drivers import get_driver
from fleet.models import Instance, Service, SwarmNode
from tests import swarmlab
from tests.conftest import api, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]
REPLICAS = 6


@pytest.fixture(scope="module")
def lab(docker_engine):  # type: ignore[no-untyped-def]
    try:
        nodes = swarmlab.up(image=settings.HMS_SAMPLE_IMAGE)
    except Exception as exc:
        swarmlab.down()
        pytest.fail(f"the three-node swarm lab did not come up: {exc}")
    yield nodes
    swarmlab.down()


@pytest.fixture
def console_on_lab(lab, monkeypatch):  # type: ignore[no-untyped-def]
    """This process and the controller it spawns talk to the lab's manager; each other node's
    engine is named so per-task figures and single-task stops reach it."""
    env = {"DOCKER_HOST": lab[0].sock,
           "HMS_SWARM_NODE_ENGINES": ",".join(f"{n.hostname}={n.sock}" for n in lab[1:])}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(settings, "HMS_SWARM_NODE_ENGINES", env["HMS_SWARM_NODE_ENGINES"])
    get_driver.cache_clear()
    yield env
    for svc in Service.objects.filter(driver="swarm"):
        try:
            get_driver("swarm").remove_service(svc.spec())
        except Exception:
            pass
    get_driver.cache_clear()


def spread() -> Counter[str]:
    return Counter(Instance.objects.filter(state=Instance.State.RUNNING, driver="swarm").values_list("node", flat=True))


def test_six_replicas_on_three_nodes_survive_a_node_loss_rebalance_back_and_move_off_a_drained_node(
        console_on_lab, lab, spawn):
    alice = User.objects.create_superuser("alice", "alice@example.org", "pw-alice-123")
    from accounts.actions import create_api_token

    token = create_api_token(alice, actor="system:test")[1]
    svc = Service.objects.create(name="lab-web", driver="swarm", image=settings.HMS_SAMPLE_IMAGE, port=8080,
                                 rebalance=Service.Rebalance.ON_RECOVERY)
    controller = spawn("controller", "--loops", "tick", **console_on_lab)
    actions.scale_service(svc, REPLICAS, actor=alice)

    # 1. Spread 2/2/2, each task healthy at its own node's address.
    wait_for(lambda: sorted(spread().values()) == [2, 2, 2]
             and Instance.objects.filter(state=Instance.State.RUNNING, health="up").count() == REPLICAS,
             timeout=60, message=f"6 healthy, 2 per node (have {dict(spread())})\n{controller.output()[-2000:]}")
    addrs = {n.hostname: n.addr for n in lab}
    for inst in Instance.objects.filter(state=Instance.State.RUNNING):
        assert inst.host == addrs[inst.node], (inst.node, inst.host)
        assert requests.get(f"http://{inst.host}:{inst.port}/health", timeout=3).status_code == 200
    wait_for(lambda: SwarmNode.objects.filter(state="ready").count() == 3, timeout=10, message="3 nodes synced")
    listed = api(Client(), "GET", "/mgmt/nodes", token=token).json()
    assert sorted(n["hostname"] for n in listed) == [n.hostname for n in lab]
    assert {n["hostname"]: n["taskCount"] for n in listed} == dict.fromkeys(addrs, 2)
    assert next(n for n in listed if n["hostname"] == lab[0].hostname)["leader"] is True
    browser = Client()
    browser.force_login(alice)
    page = browser.get("/nodes/").content.decode()
    assert all(f'data-node="{n.hostname}" data-state="ready"' in page for n in lab), page
    # CPU/memory of tasks on every node, through each node's engine (the stats sampler runs in the background).
    wait_for(lambda: Instance.objects.filter(state=Instance.State.RUNNING, memory_bytes__gt=0)
             .values("node").distinct().count() == 3, timeout=30, message="memory figures from every node")

    # 2. A worker node dies hard: its two replicas are lost, audited naming it, and run elsewhere.
    victim = lab[2]
    swarmlab.crash(victim)
    wait_for(lambda: SwarmNode.objects.get(hostname=victim.hostname).state == "down", timeout=30,
             message="node shown down")
    wait_for(lambda: AuditEntry.objects.filter(action="failover", payload__node=victim.hostname).count() == 2,
             timeout=10, message="two fail-overs naming the lost node")
    assert f'data-node="{victim.hostname}" data-state="down"' in browser.get("/nodes/").content.decode()
    wait_for(lambda: sum(spread().values()) == REPLICAS and victim.hostname not in spread(), timeout=30,
             message=f"6 running on the other nodes (have {dict(spread())})")
    cause = AuditEntry.objects.filter(action="failover", payload__node=victim.hostname).first().payload["cause"]
    assert f"node {victim.hostname} down" in cause

    # 3. The node comes back: with rebalance on-recovery the console spreads the replicas 2/2/2
    # again, one at a time, never below 6 running.
    swarmlab.start(victim)
    swarmlab.wait_daemon(victim)
    lowest = REPLICAS
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        counts = spread()
        lowest = min(lowest, sum(counts.values()))
        if sorted(counts.values()) == [2, 2, 2] and not Service.objects.get(pk=svc.pk).surge:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"not rebalanced within 90 s: {dict(spread())}\n{controller.output()[-2000:]}")
    assert lowest >= REPLICAS, f"dropped to {lowest} running while rebalancing"
    steps = list(AuditEntry.objects.filter(action="service.rebalance").values_list("payload__step", flat=True))
    assert steps.count("surge") == 2 and steps.count("settle") == 2, steps

    # 4. Drain a node from the API: the preflight names what moves; the tasks leave it; audited.
    drained = lab[1]
    preview = api(Client(), "POST", f"/mgmt/nodes/{drained.hostname}/drain?dry_run=true", token=token).json()
    assert preview["moves"] == {"lab-web": 2} and preview["room"] and not preview["applied"]
    reply = api(Client(), "POST", f"/mgmt/nodes/{drained.hostname}/drain", token=token)
    assert reply.status_code == 200, reply.content
    wait_for(lambda: drained.hostname not in spread() and sum(spread().values()) == REPLICAS, timeout=30,
             message=f"the drained node's tasks moved (have {dict(spread())})")
    entry = AuditEntry.objects.get(action="node.drain")
    assert entry.payload["node"] == drained.hostname and entry.payload["moves"] == {"lab-web": 2}
    assert SwarmNode.objects.get(hostname=drained.hostname).availability == "drain"
    assert api(Client(), "POST", f"/mgmt/nodes/{drained.hostname}/activate", token=token).status_code == 200
    wait_for(lambda: SwarmNode.objects.get(hostname=drained.hostname).availability == "active", timeout=10,
             message="node active again")
    assert os.environ["DOCKER_HOST"] == lab[0].sock
