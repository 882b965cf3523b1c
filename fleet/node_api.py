"""REST endpoints for Swarm nodes: GET /mgmt/nodes, POST /mgmt/nodes/{hostname}/drain|activate."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Path, Router, Schema

from core.openapi import NO_NUL, documented
from fleet import actions
from fleet.nodes import drain_preview, nodes_table
from fleet.selectors import node_for

router = Router(tags=["nodes"])
HOSTNAME = Path(..., example="node-3", pattern=NO_NUL)


class NodeOut(Schema):
    id: str
    hostname: str
    addr: str
    role: str
    leader: bool
    state: str
    message: str
    availability: str
    engineVersion: str
    cpus: float
    memoryBytes: int
    stateSince: datetime
    gone: bool
    tasks: dict[str, int]
    taskCount: int
    cpuPercent: float | None
    usedMemoryBytes: int | None


class DrainOut(Schema):
    node: str
    availability: str
    moves: dict[str, int]
    room: bool
    blocked: list[str]
    detail: str
    applied: bool


NODE_EXAMPLE = {"id": "t9563gdb1f6bt8khn30wmnqah", "hostname": "node-1", "addr": "10.0.0.11", "role": "manager",
                "leader": True, "state": "ready", "message": "", "availability": "active",
                "engineVersion": "20.10.24", "cpus": 2.0, "memoryBytes": 25769803776,
                "stateSince": "2026-12-02T10:00:00Z", "gone": False, "tasks": {"HMS-SVC": 2}, "taskCount": 2,
                "cpuPercent": 0.8, "usedMemoryBytes": 41943040}


@router.get("/nodes", summary="The Swarm's nodes, as the controller last saw them",
            **documented(list[NodeOut], errors=(403,), response_example=[NODE_EXAMPLE]))
def list_nodes(request: HttpRequest) -> Any:
    node_for(request.user, None)  # 403 without fleet.view_swarmnode
    return nodes_table()


def _set(request: HttpRequest, hostname: str, availability: str, dry_run: bool) -> dict[str, Any]:
    node = node_for(request.user, hostname, manage=True)
    preview = drain_preview(node) if availability == "drain" else None
    applied = False
    if not dry_run:
        actions.set_node_availability(node, availability, actor=request.user)
        applied = True
    return {"node": node.hostname, "availability": availability if applied else node.availability,
            "moves": preview.moves if preview else {}, "room": preview.room if preview else True,
            "blocked": preview.blocked if preview else [],
            "detail": preview.detail if preview else f"{node.hostname} takes tasks again", "applied": applied}


DRAIN_EXAMPLE = {"node": "node-3", "availability": "drain", "moves": {"HMS-SVC": 2}, "room": True, "blocked": [],
                 "detail": "draining node-3 moves 2 × HMS-SVC", "applied": True}


@router.post("/nodes/{hostname}/drain",
             summary="Drain a node (Swarm moves its tasks elsewhere); ?dry_run=1 only previews",
             **documented(DrainOut, errors=(403, 404, 409, 503), body=True, response_example=DRAIN_EXAMPLE,
                          error_examples={409: {"error": "drain_refused",
                                                "detail": "draining node-3 moves 2 × HMS-SVC; no other ready, "
                                                          "active node can take them"}}))
def drain_node(request: HttpRequest, hostname: str = HOSTNAME, dry_run: bool = False) -> Any:
    return _set(request, hostname, "drain", dry_run)


@router.post("/nodes/{hostname}/activate", summary="Let a drained node take tasks again",
             **documented(DrainOut, errors=(403, 404, 503), body=True, response_example=DRAIN_EXAMPLE | {
                 "availability": "active", "moves": {}, "detail": "node-3 takes tasks again"}))
def activate_node(request: HttpRequest, hostname: str = HOSTNAME, dry_run: bool = False) -> Any:
    return _set(request, hostname, "active", dry_run)
