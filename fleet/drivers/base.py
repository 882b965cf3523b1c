"""The one small interface every engine driver implements.

Drivers import nothing of ours but this module (and fleet.envvars, pure): they take a ServiceSpec
(plain data) and report what they see, so the reconcile loop can treat a local process, a container
and a Swarm task alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class EngineUnavailable(Exception):
    """The engine (Docker daemon, Swarm manager) cannot be reached right now."""


class DriverError(Exception):
    """The engine answered but refused or failed the operation."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: str = ""
    image: str = ""
    port: int = 8080
    health_path: str = "/health"
    version: int = 1
    # Service.pk: what the engines' labels and markers track a service by, so a rename never
    # orphans what it runs (0: a spec made without a row, tracked by name).
    service_id: int = 0
    env: tuple[tuple[str, str], ...] = ()  # the service's own variables (fleet.envvars)

    @property
    def key(self) -> str:
        """The service's identity on an engine (label hmsmgmt.service_id, HMSMGMT_SERVICE_ID)."""
        return str(self.service_id) if self.service_id else f"name:{self.name}"


def match_key(by_key: dict[str, str], by_name: dict[str, str], key: str | None, name: str | None) -> str | None:
    """Which listed service (by its name in the caller's dict) an engine object belongs to: by the
    service id it carries, or, for an object started before ids were carried (no id), by its name."""
    if key:
        return by_key.get(key)
    return by_name.get(name or "")


def keys_of(specs: dict[str, ServiceSpec]) -> tuple[dict[str, str], dict[str, str]]:
    """(key → listed name, name → listed name) for match_key."""
    return {s.key: n for n, s in specs.items()}, {s.name: n for n, s in specs.items()}


@dataclass
class Observed:
    ref: str
    alive: bool
    host: str = ""
    port: int | None = None
    node: str = ""
    instance_id: int | None = None  # our Instance.pk, when the engine carries it (label, env)
    started_at: datetime | None = None
    detail: str = ""  # why it is not alive: exit code, OOM, task state…
    cpu_percent: float | None = None
    memory_bytes: int | None = None
    extra: dict = field(default_factory=dict)


class Driver(Protocol):
    name: str
    # Declarative drivers (Swarm) converge replicas themselves: reconcile calls set_replicas().
    declarative: bool

    def start_instance(self, spec: ServiceSpec, instance_id: int) -> Observed: ...

    def stop_instance(self, spec: ServiceSpec, ref: str, *, grace_seconds: float = 5.0) -> None: ...

    def list_instances(self, spec: ServiceSpec) -> list[Observed]: ...

    def set_replicas(self, spec: ServiceSpec, replicas: int) -> None: ...

    def remove_service(self, spec: ServiceSpec) -> None: ...

    # Optional, for engines that report deaths as they happen (docker; reconcile checks with getattr):
    #   watch(on_death)            call on_death(service key) when one of our instances dies;
    #   reported_death(ref) -> str | None   why ref died, if reported (even while still listed alive).
