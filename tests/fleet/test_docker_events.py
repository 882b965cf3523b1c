"""The docker driver's death reports (from the engine's event stream), without an engine: the
`die` event arrives while the engine still lists the container as running, and is trusted."""

from __future__ import annotations

from fleet.drivers.base import ServiceSpec
from fleet.drivers.docker import DeathReports, DockerDriver

CONTAINER = "0123456789ab" + "f" * 52


def test_a_reported_death_reads_like_an_inspected_one() -> None:
    reports = DeathReports()
    assert reports.get(CONTAINER[:12]) is None
    reports.died(CONTAINER, "137")
    assert reports.get(CONTAINER[:12]) == "exited with code 137, killed (SIGKILL)"
    assert reports.get(CONTAINER) == reports.get(CONTAINER[:12])

    other = "a" * 64
    reports.oom(other)
    reports.died(other, "137")
    assert reports.get(other) == "exited with code 137, OOM-killed"
    reports.died("b" * 64, "0")
    assert reports.get("b" * 12) == "exited with code 0"


def test_old_reports_are_forgotten(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import fleet.drivers.docker as docker_driver

    clock = [1000.0]
    monkeypatch.setattr(docker_driver.time, "monotonic", lambda: clock[0])
    reports = DeathReports()
    reports.died(CONTAINER, "137")
    clock[0] += DeathReports.KEEP_SECONDS + 1
    reports.died("c" * 64, "1")  # each new report sweeps the expired ones
    assert reports.get(CONTAINER) is None and reports.get("c" * 12) == "exited with code 1"


class FakeAPI:
    """Just enough of docker's APIClient for list_instances()."""

    def __init__(self) -> None:
        self.inspected: list[str] = []

    def containers(self, all: bool, filters: dict) -> list[dict]:
        return [
            {
                "Id": CONTAINER,
                "State": "running",
                "Status": "Up 5 minutes",
                "Created": 1_700_000_000,
                "Labels": {"hmsmgmt.service": "HMS-SVC", "hmsmgmt.instance": "7", "hmsmgmt.spec_version": "1"},
                "Ports": [{"PrivatePort": 8080, "PublicPort": 32768, "IP": "127.0.0.1"}],
            }
        ]

    def inspect_container(self, ref: str) -> dict:
        self.inspected.append(ref)  # would block until the engine's teardown is done
        return {"State": {"Status": "exited", "ExitCode": 137}}

    def stats(self, cid: str, stream: bool) -> dict:
        raise RuntimeError("no stats here")

    def info(self) -> dict:
        return {"Name": "node-1"}


class FakeEngine:
    def __init__(self) -> None:
        self.api = FakeAPI()


def test_list_trusts_the_reported_death_over_the_running_listing() -> None:
    engine = FakeEngine()
    driver = DockerDriver(engine)  # type: ignore[arg-type]
    spec = ServiceSpec(name="HMS-SVC", image="x")
    (obs,) = driver.list_instances(spec)
    assert obs.alive and obs.port == 32768 and obs.instance_id == 7
    assert driver.reported_death(obs.ref) is None

    driver.deaths.died(CONTAINER, "137")
    (obs,) = driver.list_instances(spec)
    assert not obs.alive and obs.detail == "exited with code 137, killed (SIGKILL)"
    assert driver.reported_death(obs.ref) == obs.detail
    assert engine.api.inspected == []  # the cause came with the report: no inspect on the way
