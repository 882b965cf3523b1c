"""REST: GET /mgmt/system, the system page's figures, for staff."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from ninja import Router, Schema

from console import system
from core.openapi import documented

router = Router(tags=["system"])


class LoopOut(Schema):
    loop: str
    host: str
    pid: int | None
    leader: bool
    since: datetime | None
    lastBeatAt: datetime | None
    lastPassMs: float | None
    passes: int
    fresh: bool


class ClusterOut(Schema):
    cluster: str
    host: str
    workers: int
    busy: int
    tasks: int
    lastBeatAt: datetime | None
    fresh: bool
    queueDepth: int | None


class DatabaseOut(Schema):
    vendor: str
    reachable: bool
    version: str | None = None
    error: str | None = None


class BrokerOut(Schema):
    name: str
    reachable: bool
    queueSize: int | None = None
    error: str | None = None


class EngineOut(Schema):
    engine: str
    services: int
    breaker: str
    failures: int
    lastError: str
    changedAt: datetime | None


class SealerOut(Schema):
    pending: int
    oldestPendingSeconds: float


class SystemOut(Schema):
    at: datetime
    controllers: list[LoopOut]
    workers: list[ClusterOut]
    stepsRunning: int
    database: DatabaseOut
    broker: BrokerOut
    engines: list[EngineOut]
    sealer: SealerOut


EXAMPLE = {
    "at": "2026-12-02T06:00:00Z",
    "controllers": [{"loop": "tick", "host": "ctl-1", "pid": 4242, "leader": True, "since": "2026-12-02T05:00:00Z",
                     "lastBeatAt": "2026-12-02T05:59:59Z", "lastPassMs": 41.7, "passes": 7200, "fresh": True}],
    "workers": [{"cluster": "alerts", "host": "wk-1", "workers": 1, "busy": 0, "tasks": 12,
                 "lastBeatAt": "2026-12-02T05:59:59Z", "fresh": True, "queueDepth": 0},
                {"cluster": "hmsmgmt", "host": "wk-1", "workers": 2, "busy": 1, "tasks": 480,
                 "lastBeatAt": "2026-12-02T05:59:59Z", "fresh": True, "queueDepth": 3}],
    "stepsRunning": 1,
    "database": {"vendor": "postgresql", "reachable": True, "version": "15.8"},
    "broker": {"name": "orm", "reachable": True, "queueSize": 0},
    "engines": [{"engine": "process", "services": 3, "breaker": "closed", "failures": 0, "lastError": "",
                 "changedAt": None}],
    "sealer": {"pending": 0, "oldestPendingSeconds": 0.0},
}


REFUSED = {403: {"error": "forbidden", "detail": "Only staff may see the system state."}}


@router.get("/system", summary="The console's own state (staff)",
            **documented(SystemOut, errors=(403,), response_example=EXAMPLE, error_examples=REFUSED))
def get_system(request: HttpRequest) -> Any:
    """Controllers (each loop: leader or standby, host, pid, last pass), the worker pool, the
    database, the broker, each engine's breaker and the audit sealer: what /system/ shows."""
    if not request.user.is_staff:
        raise PermissionDenied("Only staff may see the system state.")
    return system.status()
