"""process driver: real OS processes on this host, on free loopback ports.

Each instance runs in its own session (so it outlives the web worker or controller that started
it, and a stop reaches its whole process group) and carries HMSMGMT_SERVICE_ID / HMSMGMT_INSTANCE
in its environment: that marker, read back from /proc, is how any of our processes finds them again
(by the service's id, so a renamed service keeps its instances) and how we avoid signalling a
recycled pid that now belongs to someone else.

An instance's environment is minimal (fleet.envvars: an allowlist, the service's own variables,
the markers), never the console's, which holds its secrets. The command is code execution on this
host: when the console runs as root, instances run as HMS_PROCESS_USER (default `nobody`).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shlex
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

from fleet.drivers.base import DriverError, Observed, ServiceSpec, keys_of, match_key
from fleet.envvars import instance_environment

PROJECT_DIR = Path(__file__).resolve().parents[2]
LOG_DIR = Path(settings.VAR_DIR) / "log"

def console_namespace() -> str:
    """Which console owns a process. Two consoles on one host (a staging and a production one, or
    a test run beside `make up`) must never see, adopt or stop each other's instances, so every
    instance carries the identity of the database that records it."""
    from django.db import connection  # the database is the console's identity

    s = connection.settings_dict
    key = f"{connection.vendor}:{s.get('HOST', '')}:{s.get('PORT', '')}:{s['NAME']}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def run_as() -> pwd.struct_passwd | None:
    """The account instances run as: HMS_PROCESS_USER when set; `nobody` when the console runs
    as root (a service's command must not get the console's root); else None (the console's own
    account: an unprivileged console cannot switch users, and needs not)."""
    name = settings.HMS_PROCESS_USER or ("nobody" if os.geteuid() == 0 else "")
    if not name:
        return None
    try:
        account = pwd.getpwnam(name)
    except KeyError as exc:
        raise DriverError(f"HMS_PROCESS_USER {name!r} is not an account on this host") from exc
    return None if account.pw_uid == os.geteuid() else account


# Children this process started; polled so exited ones are reaped instead of lingering as zombies.
_children: dict[int, subprocess.Popen] = {}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _reap() -> None:
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[pid]


def _read(path: str) -> bytes | None:
    # os-level reads, not pathlib: a tick reads a few files of every host process, and pathlib's
    # path parsing was a third of that scan's CPU.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_environ(pid: int, marker: bytes = b"HMSMGMT_") -> dict[str, str] | None:
    """Our HMSMGMT_* variables of a process (None: unreadable). marker: a byte string the
    environment must hold to be worth parsing (the scan passes this console's namespace)."""
    raw = _read(f"/proc/{pid}/environ")
    if raw is None:
        return None
    if marker not in raw:
        return {}
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key.startswith(b"HMSMGMT_"):
            env[key.decode()] = value.decode(errors="replace")
    return env


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the parenthesised command name (which may itself hold spaces)."""
    raw = _read(f"/proc/{pid}/stat")
    return raw.decode(errors="replace").rsplit(")", 1)[1].split() if raw else None


def exited(pid: int, fields: list[str] | None = None) -> bool:
    """Gone, or a zombie its parent has not reaped yet: either way no longer running."""
    fields = fields if fields is not None else _stat_fields(pid)
    return not fields or fields[0] in ("Z", "X")


_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
# pid -> (CPU ticks used, monotonic time) at the previous look: CPU % is the use between two looks.
_cpu_seen: dict[int, tuple[int, float]] = {}


def _usage(pid: int, uptime: float | None = None,
           fields: list[str] | None = None) -> tuple[float | None, int | None]:
    """CPU % (of one core) since the previous look, or over the process's life on the first one,
    and resident memory in bytes, from /proc (the process's own fields, as `ps` reads them).
    uptime and fields: /proc/uptime and the process's stat, when the caller read them already."""
    try:
        fields = fields if fields is not None else _stat_fields(pid)
        statm = _read(f"/proc/{pid}/statm")
        if not fields or statm is None:
            return None, None
        resident = int(statm.split()[1]) * _PAGE
        if uptime is None:
            uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None, None
    # After the ")": state is field 3 of stat(5), so utime (14), stime (15), starttime (22) sit at
    # indexes 11, 12 and 19 here.
    ticks = int(fields[11]) + int(fields[12])
    now = time.monotonic()
    previous = _cpu_seen.get(pid)
    _cpu_seen[pid] = (ticks, now)
    if previous is not None and now - previous[1] > 0.05:
        used, seconds = ticks - previous[0], now - previous[1]
    else:
        used, seconds = ticks, uptime - int(fields[19]) / _TICKS
    cpu = round(max(0.0, used / _TICKS / seconds * 100), 1) if seconds > 0 else None
    return cpu, resident


def _started_at(pid: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(Path(f"/proc/{pid}").stat().st_mtime, tz=UTC)
    except OSError:
        return None


class ProcessDriver:
    name = "process"
    declarative = False

    def start_instance(self, spec: ServiceSpec, instance_id: int) -> Observed:
        if not spec.command:
            raise DriverError(f"service {spec.name} has no command for the process driver")
        port = _free_port()
        argv = shlex.split(spec.command.format(python=sys.executable, port=port, instance=instance_id))
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        account = run_as()
        markers = {
            "PORT": str(port),
            "HMSMGMT_SERVICE": spec.name,  # for people reading `ps e`; the id is what we match
            "HMSMGMT_SERVICE_ID": spec.key,
            "HMSMGMT_NAMESPACE": console_namespace(),
            "HMSMGMT_INSTANCE": str(instance_id),
            "HMSMGMT_PORT": str(port),
        }
        env = {"PYTHONUNBUFFERED": "1",
               **({"HOME": account.pw_dir, "USER": account.pw_name} if account else
                  {k: os.environ[k] for k in ("HOME", "USER") if k in os.environ})}
        env = {**env, **instance_environment(os.environ, dict(spec.env), markers)}
        # Opened by us, before the switch, and handed over as stdout: the instance writes its log
        # without needing any right on var/ (which stays the console's).
        log = open(LOG_DIR / f"{spec.name}-{instance_id}.log", "ab")  # noqa: SIM115 (child keeps it)
        ids: dict = {} if account is None else {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=PROJECT_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                **ids,
            )
        except OSError as exc:
            hint = (f" (instances run as {account.pw_name}, HMS_PROCESS_USER: the program and the "
                    f"project directory must be readable by that account)") if account else ""
            raise DriverError(f"cannot start {argv[0]}: {exc}{hint}") from exc
        finally:
            log.close()
        _children[proc.pid] = proc
        return Observed(
            ref=str(proc.pid),
            alive=True,
            host="127.0.0.1",
            port=port,
            node=socket.gethostname(),
            instance_id=instance_id,
            started_at=datetime.now(UTC),
        )

    def _owned(self, spec: ServiceSpec, ref: str) -> bool:
        env = _read_environ(int(ref)) if ref.isdigit() else None
        if not env or env.get("HMSMGMT_NAMESPACE") != console_namespace():
            return False
        by_key, by_name = keys_of({spec.name: spec})
        return match_key(by_key, by_name, env.get("HMSMGMT_SERVICE_ID"), env.get("HMSMGMT_SERVICE")) is not None

    def stop_instance(self, spec: ServiceSpec, ref: str, *, grace_seconds: float = 5.0) -> None:
        if not self._owned(spec, ref):
            return  # already gone, or the pid was recycled by a process that is not ours
        pid = int(ref)
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            _reap()
            if exited(pid) or not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.02)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap()

    def list_instances(self, spec: ServiceSpec) -> list[Observed]:
        return self.list_all({spec.name: spec})[spec.name]

    def list_all(self, specs: dict[str, ServiceSpec]) -> dict[str, list[Observed]]:
        """The instances of every named service, from one scan of /proc: the controller's tick
        lists the engine once for the whole fleet, not once per service (each scan reads every
        host process's environment)."""
        _reap()
        namespace = console_namespace()
        found: dict[str, list[Observed]] = {name: [] for name in specs}
        by_key, by_name = keys_of(specs)
        try:
            uptime: float | None = float(Path("/proc/uptime").read_text().split()[0])
        except (OSError, ValueError):
            uptime = None
        host = socket.gethostname()
        marker = f"HMSMGMT_NAMESPACE={namespace}".encode()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            env = _read_environ(pid, marker)
            if not env or env.get("HMSMGMT_NAMESPACE") != namespace:
                continue
            listed = match_key(by_key, by_name, env.get("HMSMGMT_SERVICE_ID"), env.get("HMSMGMT_SERVICE"))
            if listed is None:
                continue
            # Only the session leader is the instance; its own children inherit the marker.
            try:
                if os.getsid(pid) != pid:
                    continue
            except ProcessLookupError:
                continue
            fields = _stat_fields(pid)
            zombie = exited(pid, fields)
            cpu, memory = (None, None) if zombie else _usage(pid, uptime, fields)
            found[listed].append(
                Observed(
                    ref=str(pid),
                    alive=not zombie,
                    host="127.0.0.1",
                    port=int(env["HMSMGMT_PORT"]) if env.get("HMSMGMT_PORT", "").isdigit() else None,
                    node=host,
                    instance_id=int(env["HMSMGMT_INSTANCE"]) if env.get("HMSMGMT_INSTANCE", "").isdigit() else None,
                    started_at=_started_at(pid),
                    detail="exited" if zombie else "",
                    cpu_percent=cpu,
                    memory_bytes=memory,
                )
            )
        for pid in [p for p in _cpu_seen if not os.path.exists(f"/proc/{p}")]:
            _cpu_seen.pop(pid, None)  # exited: the table stays as small as the fleet
        return found

    def set_replicas(self, spec: ServiceSpec, replicas: int) -> None:
        raise DriverError("the process driver is imperative; reconcile starts and stops instances")

    def remove_service(self, spec: ServiceSpec) -> None:
        for obs in self.list_instances(spec):
            self.stop_instance(spec, obs.ref, grace_seconds=3.0)
