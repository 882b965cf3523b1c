"""deploy/: the environment template names every setting, gunicorn boots from deploy/gunicorn.conf.py
and serves /readyz, the systemd units, Prometheus and Alertmanager configs pass their own checkers."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, Proc, subprocess_env, wait_for

DEPLOY = ROOT / "deploy"


def settings_variables() -> set[str]:
    return set(re.findall(r"[\"'](HMS_[A-Z0-9_]+)[\"']", (ROOT / "hmsmgmt" / "settings.py").read_text()))


def test_the_environment_template_names_every_setting() -> None:
    template = (DEPLOY / "hmsmgmt.env.example").read_text()
    # Set (NAME=…) or shown with its default in a comment (# NAME=…): either way, named.
    named = set(re.findall(r"^#?\s*(HMS_[A-Z0-9_]+)=", template, flags=re.M))
    assert len(settings_variables()) > 50  # the scan itself works
    assert settings_variables() - named == set(), "add these to deploy/hmsmgmt.env.example"
    assert "DATABASE_URL=" in template


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_gunicorn_with_the_deploy_config_serves_readyz(tmp_path: Path) -> None:
    port = free_port()
    # The config binds HMS_HOST:HMS_PORT; -b overrides it, as a command-line flag does any setting.
    proc = Proc([sys.executable, "-m", "gunicorn", "-c", str(DEPLOY / "gunicorn.conf.py"), "-b", f"127.0.0.1:{port}",
                 "--workers", "1"], subprocess_env(HMS_LOG_FORMAT="json", HMS_PORT="1"), tmp_path / "gunicorn.log")
    base = f"http://127.0.0.1:{port}"

    def ready() -> requests.Response | None:
        try:
            return requests.get(f"{base}/readyz", timeout=5, headers={"X-Request-ID": "deploy-test-1"})
        except requests.RequestException:
            assert proc.popen.poll() is None, proc.output()
            return None

    try:
        r = wait_for(ready, timeout=60, interval=0.3, message="gunicorn to answer")
        assert r.status_code == 200, r.text
        assert r.json()["checks"] == {"database": "ok", "migrations": "ok", "broker": "ok"}
        assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
    finally:
        proc.stop()
    # Gunicorn's own lines and the console's are all JSON; the request line carries the caller's id.
    lines = [json.loads(raw) for raw in proc.log_path.read_text().splitlines() if raw.strip()]
    assert any(rec["logger"] == "gunicorn.error" for rec in lines)
    assert any(rec["logger"] == "hmsmgmt.request" and rec["request_id"] == "deploy-test-1" and rec["status"] == 200
               and rec["route"] == "readyz" for rec in lines), lines
    assert not any(rec["logger"] == "gunicorn.access" for rec in lines)  # the request line replaces it


def test_systemd_units_verify(tmp_path: Path) -> None:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    for unit in (DEPLOY / "systemd").iterdir():
        # Paths of this checkout instead of /opt/hmsmgmt, so the checker finds the executables.
        text = (unit.read_text().replace("/opt/hmsmgmt/.venv/bin/python", sys.executable)
                .replace("/opt/hmsmgmt", str(ROOT))
                .replace("/etc/hmsmgmt/hmsmgmt.env", str(DEPLOY / "hmsmgmt.env.example")))
        (tmp_path / unit.name).write_text(text)
    units = ["hmsmgmt.target", "hmsmgmt-web.service", "hmsmgmt-worker@1.service", "hmsmgmt-controller@control.service",
             "hmsmgmt-controller@probes.service", "hmsmgmt-healthcheck@web.service", "hmsmgmt-healthcheck@web.timer"]
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(tmp_path / u) for u in units)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if str(tmp_path) in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_controller_units_run_the_two_loop_sets_of_up() -> None:
    from controller.loop import CONTROL_LOOPS, PROBE_LOOPS

    unit = (DEPLOY / "systemd" / "hmsmgmt-controller@.service").read_text()
    assert f"controller --loops {','.join(CONTROL_LOOPS)} " in unit
    assert f"controller --loops {','.join(PROBE_LOOPS)} " in unit


def test_prometheus_and_alertmanager_configs_check(tmp_path: Path) -> None:
    promtool, amtool = shutil.which("promtool"), shutil.which("amtool")
    if not promtool or not amtool:
        pytest.skip("promtool/amtool not installed (Debian: prometheus, prometheus-alertmanager)")
    prom = DEPLOY / "prometheus"
    token = tmp_path / "token"
    token.write_text("x")
    config = (prom / "prometheus.yml").read_text()
    assert "metrics_path: /metrics" in config and "type: Bearer" in config
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/hmsmgmt-rules.yml", str(prom / "hmsmgmt-rules.yml"))
        .replace("/etc/prometheus/hmsmgmt-metrics-token", str(token)))
    for argv in ([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                 [promtool, "check", "rules", str(prom / "hmsmgmt-rules.yml")],
                 [amtool, "check-config", str(prom / "alertmanager.yml")]):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
