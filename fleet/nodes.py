"""Swarm nodes: what the tick saw of them (SwarmNode rows), the drain preflight, and rebalancing.

Swarm reschedules a lost node's tasks by itself but never moves them back when the node returns,
so a fleet that lost a node stays crowded on the survivors. A service with `rebalance:
on-recovery` is spread out again by the console, one replica at a time and never below desired:
ask Swarm for one replica more (its spread scheduler puts it on the emptiest node), wait until
that task is healthy, then ask for desired again (Swarm removes a task from the fullest node).
The decision (`rebalance_step`) is pure; the job (fleet.jobs.Rebalancer) applies it through
fleet.actions.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from fleet.models import Instance, SwarmNode
from policies.enforce import check_drain

log = logging.getLogger(__name__)
FIELDS = ("hostname", "addr", "role", "leader", "state", "message", "availability", "engine_version",
          "nano_cpus", "memory_bytes")
SURGE_TIMEOUT_SECONDS = 120.0  # a surge task that never gets healthy is given up (back to desired)


def sync(nodes: list[dict[str, Any]]) -> list[SwarmNode]:
    """Store the swarm's nodes as listed (changed rows only); a node no longer listed is kept,
    marked gone. Returns the rows whose state changed (ready → down and back)."""
    now = timezone.now()
    rows = {n.node_id: n for n in SwarmNode.objects.all()}
    changed: list[SwarmNode] = []
    for info in nodes:
        row = rows.pop(info["id"], None)
        if row is None:
            row = SwarmNode(node_id=info["id"], state_since=now, seen_at=now,
                            **{f: info[f] for f in FIELDS})
            row.save()
            changed.append(row)
            continue
        dirty = [f for f in FIELDS if getattr(row, f) != info[f]]
        if row.gone:
            row.gone = False
            dirty.append("gone")
        if "state" in dirty:
            row.state_since = now
            dirty.append("state_since")
            changed.append(row)
        for f in FIELDS:
            setattr(row, f, info[f])
        # seen_at is refreshed at most every 10 s: it says the listing still shows the node.
        if dirty or (now - row.seen_at).total_seconds() > 10:
            row.seen_at = now
            row.save(update_fields=[*dirty, "seen_at"])
    for row in rows.values():
        if not row.gone:
            row.gone = True
            row.save(update_fields=["gone"])
    for row in changed:
        if row.state != "ready":
            log.warning("swarm node %s is %s (%s)", row.hostname, row.state, row.message)
    return changed


# --- drain preflight -------------------------------------------------------------------------------
@dataclass
class DrainPreview:
    node: SwarmNode
    moves: dict[str, int]  # service name -> replicas that will move
    room: bool  # another Ready, active node can take them
    blocked: list[str]  # services whose last node this is, where a policy forbids draining it
    detail: str


def drain_preview(node: SwarmNode) -> DrainPreview:
    """Which replicas a drain of `node` moves, and whether the other nodes have room (pure reads)."""
    live = Instance.objects.filter(driver="swarm", state__in=Instance.LIVE_STATES).select_related("service")
    moves: Counter[str] = Counter()
    nodes_of: dict[str, set[str]] = {}
    for inst in live:
        nodes_of.setdefault(inst.service.name, set()).add(inst.node)
        if inst.node == node.hostname:
            moves[inst.service.name] += 1
    others = SwarmNode.objects.filter(state="ready", availability="active", gone=False).exclude(pk=node.pk)
    room = others.exists()
    last_node = [name for name in moves if nodes_of.get(name) == {node.hostname}]
    blocked = check_drain(last_node) if last_node else []
    parts = [f"{n} × {name}" for name, n in sorted(moves.items())]
    detail = (f"draining {node.hostname} moves " + ", ".join(parts)) if parts else f"{node.hostname} runs no replicas"
    if not room:
        detail += "; no other ready, active node can take them"
    if blocked:
        detail += "; a policy forbids draining the last node of " + ", ".join(blocked)
    return DrainPreview(node, dict(moves), room, blocked, detail)


# --- rebalance -------------------------------------------------------------------------------------
def rebalance_step(desired: int, surge: int, counts: dict[str, int], healthy: int,
                   surge_age: float | None) -> str | None:
    """What a service with rebalance on-recovery should do now (pure).

    counts: running replicas per Ready, active node (zeros included); healthy: its healthy
    replicas. "surge" asks for one replica more when the spread is uneven by two or more and the
    service is converged; "settle" goes back to desired once the extra task is healthy (or was
    given up on); None leaves it alone."""
    if surge:
        if healthy >= desired + 1 or (surge_age is not None and surge_age > SURGE_TIMEOUT_SECONDS):
            return "settle"
        return None
    if desired < 1 or len(counts) < 2 or healthy < desired or sum(counts.values()) != desired:
        return None
    return "surge" if max(counts.values()) - min(counts.values()) >= 2 else None


# --- what the nodes page and GET /mgmt/nodes show ---------------------------------------------------
def nodes_table() -> list[dict[str, Any]]:
    """Every node with its tasks by service and their CPU/memory: two queries."""
    rows = list(SwarmNode.objects.all())
    per_node: dict[str, dict[str, Any]] = {}
    for inst in (Instance.objects.filter(driver="swarm", state__in=Instance.LIVE_STATES)
                 .exclude(node="").select_related("service").order_by("service__name")):
        entry = per_node.setdefault(inst.node, {"tasks": Counter(), "cpu": 0.0, "memory": 0, "measured": 0})
        entry["tasks"][inst.service.name] += 1
        if inst.cpu_percent is not None:
            entry["cpu"] += inst.cpu_percent
            entry["memory"] += inst.memory_bytes or 0
            entry["measured"] += 1
    out = []
    for node in rows:
        entry = per_node.get(node.hostname, {"tasks": Counter(), "cpu": 0.0, "memory": 0, "measured": 0})
        out.append({
            "id": node.node_id, "hostname": node.hostname, "addr": node.addr, "role": node.role,
            "leader": node.leader, "state": node.state, "message": node.message,
            "availability": node.availability, "engineVersion": node.engine_version,
            "cpus": round(node.nano_cpus / 1e9, 2), "memoryBytes": node.memory_bytes,
            "stateSince": node.state_since, "gone": node.gone,
            "tasks": dict(sorted(entry["tasks"].items())), "taskCount": sum(entry["tasks"].values()),
            # Figures only from tasks the console could measure (docs/engines.md: several machines).
            "cpuPercent": round(entry["cpu"], 1) if entry["measured"] else None,
            "usedMemoryBytes": entry["memory"] if entry["measured"] else None,
        })
    return out
