from __future__ import annotations

from functools import cache

from fleet.drivers.base import Driver, DriverError, EngineUnavailable, Observed, ServiceSpec

__all__ = ["Driver", "DriverError", "EngineUnavailable", "Observed", "ServiceSpec", "get_driver"]


@cache
def get_driver(name: str) -> Driver:
    # Each driver is imported when first asked for: the docker SDK costs every process that never
    # talks to Docker (the embedded default) its import time and memory.
    if name == "process":
        from fleet.drivers.process import ProcessDriver  # lazily, see above

        return ProcessDriver()
    if name == "docker":
        from fleet.drivers.docker import DockerDriver  # lazily, see above

        return DockerDriver()
    if name == "swarm":
        from fleet.drivers.swarm import SwarmDriver  # lazily, see above

        return SwarmDriver()
    raise DriverError(f"unknown driver {name!r}")
