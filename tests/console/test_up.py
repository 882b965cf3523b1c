"""`manage.py up` on a fresh database, as a new user runs it (`make up`): migrate, demo, admin with
a first API token, web + worker + controller; the chapter's two calls work; Ctrl-C (SIGINT to the
foreground process group) stops everything, the sample instances included."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from fleet.drivers.process import exited
from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_with(marker: bytes) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid() or exited(int(entry.name)):
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")[:100]
                found.append(f"{entry.name}: {cmdline!r}")
        except OSError:
            continue
    return found


def test_up_serves_the_chapter_calls_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HMS_TESTING", "HMS_TEST_DB_SUFFIX")}
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'console.sqlite3'}", "HMS_VAR_DIR": str(tmp_path),
                "HMS_DEBUG": "1", "PYTHONUNBUFFERED": "1", "HMS_ADMIN_PASSWORD": ""})
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "up", "--port", str(port)], env=env,
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    pids: list[int] = []
    try:
        wait_for(lambda: f"hmsmgmt console: {base}/" in log.read_text(errors="replace"), timeout=120,
                 interval=0.2, message="up to print its URL")
        text = log.read_text(errors="replace")
        assert re.search(r"created superuser 'admin' with password: \S+", text), text
        token = re.search(r"API token for 'admin': (hms_\S+)", text).group(1)
        auth = {"Authorization": f"Bearer {token}"}

        def web_up() -> bool:
            try:
                return requests.get(f"{base}/login/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(web_up, timeout=60, interval=0.2, message="the web server")
        resp = requests.post(f"{base}/mgmt/scale", json={"service": "HMS-SVC", "instances": 3, "wait": True},
                             headers=auth, timeout=60)
        assert resp.status_code == 200 and resp.json()["running"] == 3, resp.text
        resp = requests.post(f"{base}/mgmt/workflows", json={"flowId": "exportPatientData", "data": {"user": 1}},
                             headers=auth, timeout=30)
        assert resp.status_code == 200 and resp.json()["status"] == "started", resp.text
        run_id = resp.json()["runId"]

        def finished() -> str | None:
            status = requests.get(f"{base}/mgmt/workflows/{run_id}", headers=auth, timeout=10).json()["status"]
            return status if status in ("succeeded", "failed", "cancelled") else None

        assert wait_for(finished, timeout=60, interval=0.3, message="the run to finish") == "succeeded"
        services = requests.get(f"{base}/mgmt/services", headers=auth, timeout=10).json()
        for svc in services:
            detail = requests.get(f"{base}/mgmt/services/{svc['name']}", headers=auth, timeout=10).json()
            pids += [int(i["ref"]) for i in detail["instances"] if i["state"] in ("running", "starting")]
        assert len(pids) >= 3 and all(not exited(p) for p in pids)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            raise AssertionError("up did not stop within 40 s of Ctrl-C") from None
    wait_for(lambda: all(exited(p) for p in pids), timeout=15, message="sample instances stopped")
    # Nothing of this console outlives it: web (master and workers), worker, controller all carry
    # its HMS_VAR_DIR in their environment.
    marker = f"HMS_VAR_DIR={tmp_path}".encode()
    wait_for(lambda: not _processes_with(marker), timeout=15,
             message=f"every console process gone ({_processes_with(marker)})")
    assert "stopped web, worker, controller and" in log.read_text(errors="replace")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/login/", timeout=2)
