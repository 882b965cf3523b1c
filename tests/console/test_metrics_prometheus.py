"""Debian's real Prometheus scrapes the console's /metrics every second with the bearer token: it
sees HMS-SVC scaled to 3 running instances, and after a kill -9 of one of them the fail-over the
real controller made (and the replacement)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from fleet.actions import scale_service
from fleet.models import Instance, Service
from tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]
PROMETHEUS = os.environ.get("HMS_PROMETHEUS", "/usr/bin/prometheus")
TOKEN = "prometheus-scrape-token-0123"
RUNNING = 'hmsmgmt_service_instances{service="HMS-SVC",state="running"}'
FAILOVERS = 'hmsmgmt_failovers_total{service="HMS-SVC"}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def query(self, promql: str) -> list[dict]:
        resp = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        resp.raise_for_status()
        return resp.json()["data"]["result"]

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def wait_for(self, promql: str, expected: float, timeout: float) -> None:
        seen: list[float | None] = []

        def check() -> bool:
            seen.append(self.scalar(promql))
            return seen[-1] == expected

        try:
            wait_for(check, timeout=timeout, interval=0.5, message=f"{promql} == {expected} in Prometheus")
        except AssertionError as exc:
            targets = requests.get(f"{self.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            raise AssertionError(f"{exc}; last values {seen[-5:]}; targets "
                                 f"{[(t['health'], t['lastError']) for t in targets]}; log:\n"
                                 f"{self.log.read_text(errors='replace')[-2000:]}") from None


@pytest.fixture
def prometheus(live_server, settings, tmp_path: Path) -> Iterator[Prometheus]:  # type: ignore[no-untyped-def]
    if not shutil.which(PROMETHEUS) and not os.path.exists(PROMETHEUS):
        if os.environ.get("CI") == "true":
            pytest.fail(f"prometheus not found at {PROMETHEUS}: CI installs Debian's prometheus")
        pytest.skip(f"prometheus not found at {PROMETHEUS}")
    # The live server runs in this process: the overridden settings are the ones it answers with.
    settings.HMS_METRICS_TOKEN = TOKEN
    settings.HMS_METRICS_ALLOW = ()
    target = urlsplit(live_server.url).netloc
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: hmsmgmt
    scrape_interval: 1s
    scrape_timeout: 1s
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials: {TOKEN}
    static_configs:
      - targets: ["{target}"]
""")
    port = free_port()
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                stdout=out, stderr=subprocess.STDOUT)
    prom = Prometheus(f"http://127.0.0.1:{port}", log)
    try:
        def ready() -> bool:
            try:
                return requests.get(f"{prom.url}/-/ready", timeout=1).status_code == 200
            except requests.ConnectionError:
                assert proc.poll() is None, log.read_text(errors="replace")
                return False

        wait_for(ready, timeout=30, interval=0.2, message="Prometheus ready")
        yield prom
    finally:
        # By PID: only the Prometheus this test started.
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def test_prometheus_sees_the_scale_and_the_failover(prometheus, demo, spawn, stop_local_instances) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    controller = spawn("controller")
    svc = Service.objects.get(name="HMS-SVC")
    assert scale_service(svc, 3, actor="system:test").decision.allowed
    wait_for(lambda: Instance.objects.filter(service=svc, state=Instance.State.RUNNING).count() == 3,
             timeout=60, interval=0.2, message="three running HMS-SVC instances")
    prometheus.wait_for(RUNNING, 3, timeout=30)
    assert prometheus.scalar('hmsmgmt_service_instances{service="HMS-SVC",state="desired"}') == 3
    before = prometheus.scalar(FAILOVERS)
    assert before is not None, "the fail-over counter exists before the first fail-over"

    victim = Instance.objects.filter(service=svc, state=Instance.State.RUNNING).order_by("id").first()
    os.kill(int(victim.ref), signal.SIGKILL)
    prometheus.wait_for(FAILOVERS, before + 1, timeout=30)
    prometheus.wait_for(RUNNING, 3, timeout=30)  # the replacement, seen by Prometheus too
    assert prometheus.scalar(f"increase({FAILOVERS}[1m])") is not None  # usable as a counter
    assert prometheus.scalar('hmsmgmt_controller_loops_running{loop="tick"}') == 1
    assert "Traceback" not in controller.output()
    assert time.monotonic() - started < 150
