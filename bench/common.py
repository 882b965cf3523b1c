"""Shared bench plumbing: a fresh PostgreSQL database, manage.py calls, a gunicorn server, wrk."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BASE_PG = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def fresh_database(name: str) -> str:
    """Drop and create `name`; return its URL."""
    with psycopg.connect(BASE_PG, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlparse(BASE_PG)
    return url._replace(path=f"/{name}").geturl()


def env_for(db_url: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": db_url, "HMS_SECRET_KEY": "bench-secret-key-" + "x" * 40,
           "HMS_DEBUG": "0", "HMS_ALLOWED_HOSTS": "127.0.0.1,localhost", "HMS_SECURE_COOKIES": "0",
           "HMS_LOG_LEVEL": "WARNING", "HMS_SSL_REDIRECT": "0", "HMS_HSTS_SECONDS": "0",
           "HMS_VAR_DIR": tempfile.mkdtemp(prefix="hmsbench-")}
    # As tests/conftest.py does: the process driver's instances run as `nobody` when the console
    # runs as root, and nobody cannot execute an interpreter under /root (pyenv).
    env.setdefault("HMS_PROCESS_USER", "root" if os.geteuid() == 0 else "")
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str, input_text: str | None = None) -> str:
    out = subprocess.run([PY, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True, input=input_text)
    return out.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    def __init__(self, env: dict[str, str], workers: int = 4, log: Path | None = None) -> None:
        self.port = free_port()
        out = open(log, "ab") if log else None  # noqa: SIM115 (the server keeps it)
        self.proc = subprocess.Popen(
            [PY, "-m", "gunicorn", "hmsmgmt.wsgi", "-b", f"127.0.0.1:{self.port}", "-w", str(workers),
             "--log-level", "warning"],
            env=env, cwd=ROOT, start_new_session=True, stdout=out, stderr=out)
        if out:
            out.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


def wrk_post(url: str, body: str | list[str], headers: dict[str, str], *, seconds: int = 10,
             connections: int = 8, threads: int = 2) -> dict[str, float]:
    """POST load with wrk (a list of bodies is cycled through, one per request); returns req/s,
    p50/p99 in ms, the non-2xx count, the request count and socket timeouts."""
    if not shutil.which("wrk"):
        raise SystemExit("wrk is required for this benchmark: apt-get install -y wrk")
    bodies = [body] if isinstance(body, str) else body
    script = 'wrk.method = "POST"\n' + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    script += "bodies = {" + ", ".join(f"[[{b}]]" for b in bodies) + "}\ni = 0\n"
    script += "request = function()\n  i = i + 1\n  return wrk.format(nil, nil, nil, bodies[(i % #bodies) + 1])\nend\n"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    try:
        done = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
                               fh.name, url], capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(fh.name)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stdout}{done.stderr}")
    out = done.stdout
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),
        "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),
        "non2xx": float(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)) else 0.0,
        "requests": float(re.search(r"(\d+) requests in", out).group(1)),
        "errors": float(m.group(1)) if (m := re.search(r"Socket errors:.*timeout (\d+)", out)) else 0.0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wait(predicate, timeout: float, what: str, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll gently until predicate() is truthy (on 2 cores the bench's own queries compete with
    what it measures); a bench that times out stops with a message, not a traceback."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


# --- processes seen through /proc (CPU and memory of what a bench started) -------------------------
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # stat(5) fields 14 and 15


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0  # gone meanwhile


def children(pid: int) -> list[int]:
    """Direct children of `pid` (a gunicorn master's workers)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:  # field 4: ppid
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def login(base_url: str, username: str, password: str):  # type: ignore[no-untyped-def]
    """A requests.Session signed in through the real sign-in form (CSRF cookie + token)."""
    import requests  # here: only the benches that sign in need it

    session = requests.Session()
    session.get(f"{base_url}/login/", timeout=10).raise_for_status()
    resp = session.post(f"{base_url}/login/", timeout=10, allow_redirects=False,
                        data={"username": username, "password": password,
                              "csrfmiddlewaretoken": session.cookies["csrftoken"]},
                        headers={"Referer": f"{base_url}/login/"})
    if resp.status_code != 302:
        raise SystemExit(f"sign-in as {username} failed: HTTP {resp.status_code}")
    return session
