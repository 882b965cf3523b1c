"""A private PostgreSQL and a whole console on it (gunicorn, a qcluster, a controller), for the
database-outage fault test and its bench. Nothing here touches the shared server on 5432: the
instance is initdb'd in a temporary directory owned by postgres, on a free port, with its socket in
that directory, and stopped and started at will. The test process talks to it with psycopg and
HTTP only, so it needs no Django database of its own."""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent.parent
PY = sys.executable
ADMIN_PASSWORD = "outage-admin-pw-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class PrivatePostgres:
    """initdb + pg_ctl as the postgres user; trust auth on 127.0.0.1 only."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins or not shutil.which("runuser"):
            raise RuntimeError("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin) or runuser")
        self.bin = Path(bins[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="hms-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                          "-E", "UTF8", "--locale", "C")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/hms"

    def _as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / tool), *args], check=True,
                       capture_output=True, timeout=60)

    def start(self, *, fsync: bool = False, extra: str = "") -> None:
        """fsync off by default: a test instance, and the outage is a clean stop, not a crash (a
        benchmark keeps it on). extra: more server options (`-c name=value …`)."""
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
                f"{'' if fsync else ' -c fsync=off'} {extra}")
        self._as_postgres("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "server.log"),
                          "-w", "-t", "30", "start")

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self, mode: str = "fast") -> None:
        """fast: every session is terminated (what a restart or failover does to clients)."""
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def create_database(self) -> None:
        with psycopg.connect(f"postgres://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE hms")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except Exception:  # already stopped
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Proc:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
            except ProcessLookupError:
                pass

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


class Console:
    """web (gunicorn, 2 workers), worker (qcluster, 1 worker) and controller against one database."""

    def __init__(self, db_url: str, logdir: Path, **extra_env: str) -> None:
        self.logdir = logdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DATABASE_URL": db_url, "HMS_SECRET_KEY": "outage-secret-key-" + "x" * 40,
                    "HMS_DEBUG": "0", "HMS_ALLOWED_HOSTS": "127.0.0.1,localhost", "HMS_SECURE_COOKIES": "0",
                    "HMS_SSL_REDIRECT": "0", "HMS_HSTS_SECONDS": "0", "HMS_VAR_DIR": str(logdir / "var"),
                    "HMS_LOG_LEVEL": "INFO", "HMS_Q_WORKERS": "1", "PYTHONUNBUFFERED": "1", **extra_env}
        self.env.pop("HMS_TESTING", None)
        self.procs: dict[str, Proc] = {}
        self.token = ""
        self.session = requests.Session()

    def manage(self, *args: str) -> str:
        out = subprocess.run([PY, str(ROOT / "manage.py"), *args], env=self.env, cwd=ROOT, capture_output=True,
                             text=True, timeout=180)
        if out.returncode:
            raise AssertionError(f"manage.py {' '.join(args)} exited {out.returncode}: {out.stdout}{out.stderr}")
        return out.stdout.strip()

    def prepare(self) -> None:
        """Schema, the demo fleet (4 instances over 3 services), a superuser and its API token."""
        self.manage("migrate", "-v0")
        self.manage("load_demo")
        env = {**self.env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD}
        subprocess.run([PY, str(ROOT / "manage.py"), "createsuperuser", "--noinput", "--username", "admin",
                        "--email", "admin@example.org"], env=env, cwd=ROOT, check=True, capture_output=True)
        self.token = re.search(r"hms_\S+", self.manage("create_api_token", "admin")).group(0)  # type: ignore[union-attr]

    def start(self) -> None:
        self.procs["web"] = Proc("web", [PY, "-m", "gunicorn", "hmsmgmt.wsgi:application", "--workers", "2",
                                         "--bind", f"127.0.0.1:{self.port}", "--timeout", "60",
                                         "--graceful-timeout", "5"], self.env, self.logdir)
        self.procs["worker"] = Proc("worker", [PY, str(ROOT / "manage.py"), "qcluster"], self.env, self.logdir)
        self.procs["controller"] = Proc("controller", [PY, str(ROOT / "manage.py"), "controller"], self.env,
                                        self.logdir)
        wait_until(self._web_up, 60, 0.2, "gunicorn to answer")

    def _web_up(self) -> bool:
        try:
            return self.get("/mgmt/services").status_code == 200
        except requests.RequestException:
            assert self.procs["web"].alive, self.procs["web"].output()
            return False

    def sign_in(self) -> None:
        """A browser session (pages need one: an anonymous visit is redirected without a query)."""
        self.session.get(f"{self.base}/login/", timeout=10)
        r = self.session.post(f"{self.base}/login/", data={
            "username": "admin", "password": ADMIN_PASSWORD,
            "csrfmiddlewaretoken": self.session.cookies["csrftoken"]}, headers={"Referer": f"{self.base}/login/"},
            timeout=10, allow_redirects=False)
        assert r.status_code == 302, r.text[:500]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.base}{path}", headers=self.headers(), timeout=10)

    def post(self, path: str, body: object) -> requests.Response:
        return requests.post(f"{self.base}{path}", json=body, headers=self.headers(), timeout=30)

    def page(self, path: str = "/") -> requests.Response:
        return self.session.get(f"{self.base}{path}", timeout=10, allow_redirects=False)

    def scale(self, service: str, instances: int) -> requests.Response:
        return self.post("/mgmt/scale", {"service": service, "instances": instances})

    def stop(self) -> None:
        for name in ("web", "worker", "controller"):
            if name in self.procs:
                self.procs[name].stop()

    def remove_instances(self) -> None:
        """The sample processes outlive the controller (their own sessions): stop them."""
        code = ("from fleet.drivers.process import ProcessDriver\nfrom fleet.models import Service\n"
                "for s in Service.objects.all(): ProcessDriver().remove_service(s.spec())")
        subprocess.run([PY, str(ROOT / "manage.py"), "shell", "-c", code], env=self.env, cwd=ROOT,
                       capture_output=True, timeout=60)


def counts(db_url: str) -> dict[str, tuple[int, int]]:
    """service → (desired, running)."""
    with psycopg.connect(db_url, connect_timeout=3) as conn:
        rows = conn.execute(
            "SELECT s.name, s.desired_instances, count(i.id) FILTER (WHERE i.state = 'running') "
            "FROM fleet_service s LEFT JOIN fleet_instance i ON i.service_id = s.id "
            "GROUP BY s.name, s.desired_instances").fetchall()
    return {name: (desired, running) for name, desired, running in rows}


def converged(db_url: str) -> bool:
    try:
        return all(d == r for d, r in counts(db_url).values())
    except psycopg.Error:
        return False


def audit_rows(db_url: str) -> list[tuple[int, int | None, str]]:
    """(id, seq, action) of every audit entry, in insertion order."""
    with psycopg.connect(db_url, connect_timeout=3) as conn:
        return conn.execute("SELECT id, seq, action FROM audit_auditentry ORDER BY id").fetchall()
