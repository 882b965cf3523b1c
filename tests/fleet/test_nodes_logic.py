"""The pure parts of multi-node handling: the rebalance decision, the capacity decision, the node
sync and the drain preflight (no engine needed)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from fleet import nodes
from fleet.models import Instance, Service, SwarmNode
from policies.models import Policy
from slo.capacity import CapacityWatch, capacity_step
from slo.models import Incident


def test_rebalance_surges_only_when_converged_and_uneven_then_settles_once_the_extra_task_is_healthy() -> None:
    assert nodes.rebalance_step(6, 0, {"a": 3, "b": 3, "c": 0}, 6, None) == "surge"
    assert nodes.rebalance_step(6, 0, {"a": 2, "b": 3, "c": 1}, 6, None) == "surge"
    assert nodes.rebalance_step(6, 0, {"a": 2, "b": 2, "c": 2}, 6, None) is None
    assert nodes.rebalance_step(6, 0, {"a": 3, "b": 2, "c": 1}, 6, None) == "surge"
    assert nodes.rebalance_step(6, 0, {"a": 3, "b": 3, "c": 0}, 5, None) is None  # one unhealthy: wait
    assert nodes.rebalance_step(6, 0, {"a": 3, "b": 2}, 5, None) is None  # still rescheduling
    assert nodes.rebalance_step(6, 0, {"a": 6}, 6, None) is None  # one node: nowhere to move
    assert nodes.rebalance_step(6, 1, {"a": 3, "b": 3, "c": 1}, 6, 2.0) is None  # new task not healthy yet
    assert nodes.rebalance_step(6, 1, {"a": 3, "b": 3, "c": 1}, 7, 2.0) == "settle"
    assert nodes.rebalance_step(6, 1, {"a": 3, "b": 3, "c": 0}, 6, nodes.SURGE_TIMEOUT_SECONDS + 1) == "settle"


@given(st.lists(st.integers(min_value=0, max_value=8), min_size=2, max_size=5))
def test_a_surge_never_happens_on_an_even_spread(counts: list[int]) -> None:
    spread = {f"n{i}": c for i, c in enumerate(counts)}
    desired = sum(counts)
    step = nodes.rebalance_step(desired, 0, spread, desired, None)
    assert (step == "surge") == (desired >= 1 and max(counts) - min(counts) >= 2)


def test_capacity_opens_only_past_the_grace_and_resolves_when_back() -> None:
    t0 = timezone.now()
    assert capacity_step(6, 6, None, t0, 30, False) == (None, None)
    assert capacity_step(6, 4, None, t0, 30, False) == (None, t0)
    assert capacity_step(6, 4, t0, t0 + timedelta(seconds=29), 30, False) == (None, t0)
    assert capacity_step(6, 4, t0, t0 + timedelta(seconds=30), 30, False) == ("open", t0)
    assert capacity_step(6, 4, t0, t0 + timedelta(seconds=90), 30, True) == (None, t0)
    assert capacity_step(6, 6, t0, t0 + timedelta(seconds=91), 30, True) == ("resolve", None)


@pytest.mark.django_db
def test_capacity_watch_opens_an_incident_for_a_service_short_past_the_grace_and_resolves_it(settings) -> None:
    settings.HMS_CAPACITY_GRACE_SECONDS = 1
    svc = Service.objects.create(name="short", command="x", desired_instances=2)
    watch = CapacityWatch()
    watch()
    assert not Incident.objects.filter(kind="capacity").exists()  # short, but not for long yet
    watch.short_since[svc.pk] -= timedelta(seconds=2)
    watch()
    incident = Incident.objects.get(kind="capacity", service=svc)
    assert incident.status == "open" and incident.evidence["running"] == 0
    for _ in range(2):
        Instance.objects.create(service=svc, driver="process", state=Instance.State.RUNNING)
    watch()
    incident.refresh_from_db()
    assert incident.status == "resolved"


@pytest.mark.django_db
def test_node_sync_writes_changes_and_the_drain_preview_names_moves_room_and_the_last_node_guard() -> None:
    info = {"id": "n1", "hostname": "node-1", "addr": "10.0.0.1", "state": "ready", "message": "",
            "availability": "active", "role": "manager", "leader": True, "reachability": "reachable",
            "engine_version": "20.10", "nano_cpus": 2_000_000_000, "memory_bytes": 1 << 30}
    two = dict(info, id="n2", hostname="node-2", role="worker", leader=False)
    assert len(nodes.sync([info, two])) == 2
    assert nodes.sync([info, two]) == []  # nothing changed: nothing written
    changed = nodes.sync([info, dict(two, state="down")])
    assert [n.hostname for n in changed] == ["node-2"]
    nodes.sync([info])
    assert SwarmNode.objects.get(hostname="node-2").gone

    svc = Service.objects.create(name="web", driver="swarm", image="x", desired_instances=2)
    for _ in range(2):
        Instance.objects.create(service=svc, driver="swarm", node="node-1", state=Instance.State.RUNNING)
    node1 = SwarmNode.objects.get(hostname="node-1")
    preview = nodes.drain_preview(node1)
    assert preview.moves == {"web": 2} and not preview.room and "no other ready" in preview.detail
    nodes.sync([info, two])  # node-2 back
    preview = nodes.drain_preview(node1)
    assert preview.room and preview.blocked == []
    Policy.objects.create(name="keep one", kind=Policy.Kind.LAST_NODE_GUARD)
    assert nodes.drain_preview(node1).blocked == ["web"]
