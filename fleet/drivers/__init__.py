from __future__ import annotations

from functools import cache

from fleet.drivers.base import Driver, DriverError, EngineUnavailable, Observed, ServiceSpec

__all__ = ["Driver", "DriverError", "EngineUnavailable", "Observed", "ServiceSpec", "get_driver"]


@cache
def get_driver(name: str) -> Driver:
    if name == "process":
        from fleet.drivers.process import ProcessDriver

        return ProcessDriver()
    if name == "docker":
        from fleet.drivers.docker import DockerDriver

        return DockerDriver()
    if name == "swarm":
        from fleet.drivers.swarm import SwarmDriver

        return SwarmDriver()
    raise DriverError(f"unknown driver {name!r}")
