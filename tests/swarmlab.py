"""A real multi-node Docker Swarm on this one machine, for the multi-node tests and for a newcomer.

    python -m tests.swarmlab up          # 3 nodes (≈ 4 s); prints DOCKER_HOST of the manager
    python -m tests.swarmlab crash 3     # power loss of node 3 (its dockerd, shims, containers)
    python -m tests.swarmlab start 3     # bring node 3 back; it rejoins by itself
    python -m tests.swarmlab down        # remove everything the lab made (≈ 7 s)

Each node is its own dockerd in its own network, mount and UTS namespace; the nodes share a
private bridge (10.213.0.0/24) that lives in a namespace of its own, and this (root) namespace
reaches them as 10.213.0.1. Nodes have no default route, so nothing leaves the lab. The machine's
default dockerd and its swarm are never changed: the sample image is read from it once
(`docker save`) and loaded into every node, because there is no registry.

What the kernel here allows, learned the hard way (see also ../shared/swarmlab/README.md):
- `ip netns exec` remounts /sys and loses the cgroup tree, so a daemon started that way dies
  ("Devices cgroup isn't mounted"): we enter the namespace with nsenter and re-bind the cgroups.
- The bridge must not live in the root namespace: bridged frames would cross the default daemon's
  FORWARD DROP policy.
- No IPVS: no routing mesh and no service VIPs. Services publish in host mode (each task gets its
  own port on its node) and use `--endpoint-mode dnsrr`.
- A killed dockerd alone is not a node crash (its shims and containers keep answering): `crash`
  kills everything in the node's namespace and cgroups.
- A system containerd (/run/containerd/containerd.sock) would be shared by every node: refused.

Needs root and the default engine with the sample image (tests build it first).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RUN = Path("/run/hmslab")  # sockets live below: keep the path short (sun_path is 108 bytes)
DATA = Path("/var/lib/hmslab")  # data roots: overlay2 needs a real file system
LOGS = Path(os.environ.get("HMSLAB_LOGS", "/tmp/hmslab-logs"))
NET = "10.213.0"
BRIDGE_NS = "hmslab-br"
HOST_IF = "hmslab0"
DEFAULT_NODES = 3


@dataclass(frozen=True)
class Node:
    index: int

    @property
    def addr(self) -> str:
        return f"{NET}.{10 + self.index}"

    @property
    def netns(self) -> str:
        return f"hmslab-n{self.index}"

    @property
    def hostname(self) -> str:
        return f"hmslab-n{self.index}"

    @property
    def sock(self) -> str:
        return f"unix://{RUN}/n{self.index}.sock"

    @property
    def pidfile(self) -> Path:
        return RUN / f"n{self.index}.pid"

    @property
    def cgroup(self) -> str:
        return f"hmslab-node{self.index}"


def nodes(count: int = DEFAULT_NODES) -> list[Node]:
    return [Node(i) for i in range(1, count + 1)]


def _run(*args: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, timeout=timeout, capture_output=True, text=True, **kw)


def docker(node: Node, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return _run("docker", "-H", node.sock, *args, check=check, timeout=timeout)


def _netns_exists(name: str) -> bool:
    return name in _run("ip", "netns", "list").stdout.split()


def _link_exists(name: str, ns: str | None = None) -> bool:
    args = ("ip", "-n", ns, "link", "show", name) if ns else ("ip", "link", "show", name)
    return _run(*args, check=False).returncode == 0


def daemon_pid(node: Node) -> int | None:
    """The PID of the node's dockerd when it is alive and really ours (never trust a pid file
    alone: PIDs are reused)."""
    try:
        pid = int(node.pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    return pid if f"{node.sock} " in cmdline else None


# --- network -------------------------------------------------------------------------------------
def _network(lab: list[Node]) -> None:
    if not _netns_exists(BRIDGE_NS):
        _run("ip", "netns", "add", BRIDGE_NS)
    _run("ip", "-n", BRIDGE_NS, "link", "set", "lo", "up")
    if not _link_exists("br0", BRIDGE_NS):
        _run("ip", "-n", BRIDGE_NS, "link", "add", "br0", "type", "bridge")
    _run("ip", "-n", BRIDGE_NS, "link", "set", "br0", "up")
    if not _link_exists(HOST_IF):
        _run("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", "host0", "netns", BRIDGE_NS)
        _run("sysctl", "-qw", f"net.ipv6.conf.{HOST_IF}.disable_ipv6=1", check=False)
        _run("ip", "addr", "add", f"{NET}.1/24", "dev", HOST_IF)
    _run("ip", "-n", BRIDGE_NS, "link", "set", "host0", "master", "br0", "up")
    _run("ip", "link", "set", HOST_IF, "up")
    for node in lab:
        if not _netns_exists(node.netns):
            _run("ip", "netns", "add", node.netns)
        _run("ip", "-n", node.netns, "link", "set", "lo", "up")
        port = f"p{node.index}"
        if not _link_exists(port, BRIDGE_NS):
            _run("ip", "-n", BRIDGE_NS, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                 "netns", node.netns)
            _run("ip", "-n", node.netns, "addr", "add", f"{node.addr}/24", "dev", "eth0")
        _run("ip", "-n", BRIDGE_NS, "link", "set", port, "master", "br0", "up")
        _run("ip", "-n", node.netns, "link", "set", "eth0", "up")


# --- daemons -------------------------------------------------------------------------------------
# Runs inside the node's namespaces: its own host name, a /sys showing its own interfaces, and
# the cgroup tree bound back on top of it (dockerd needs it).
_INNER = """set -e
hostname "$1"; mkdir -p "$2"
mount --rbind /sys/fs/cgroup "$2"; umount -l /sys; mount -t sysfs sysfs /sys
mount --rbind "$2" /sys/fs/cgroup; umount -l "$2"
shift 2; exec "$@"
"""


def start(node: Node) -> None:
    if daemon_pid(node):
        return
    work = RUN / f"n{node.index}"
    (DATA / f"n{node.index}").mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    Path(node.sock.removeprefix("unix://")).unlink(missing_ok=True)
    node.pidfile.unlink(missing_ok=True)
    # dockerd 20.10 keeps its engine key in /etc/docker unless told otherwise: one key per node.
    (work / "daemon.json").write_text(json.dumps({"deprecated-key-path": str(DATA / f"n{node.index}" / "key.json")}))
    dockerd = [
        "dockerd", "--host", node.sock, "--pidfile", str(node.pidfile),
        "--data-root", str(DATA / f"n{node.index}"), "--exec-root", str(work / "x"),
        "--config-file", str(work / "daemon.json"), "--storage-driver", "overlay2",
        # Containers land in their own cgroup, so a crash can find and kill them.
        "--cgroup-parent", f"/{node.cgroup}",
        "--bip", f"10.214.{node.index}.1/24",
        "--default-address-pool", f"base=10.215.{node.index}.0/24,size=26",
        "--swarm-default-advertise-addr", node.addr, "--log-level", "warn",
    ]
    env = dict(os.environ, DOCKER_SERVICE_PREFER_OFFLINE_IMAGE="1")  # no registry: use the loaded image
    log = open(LOGS / f"n{node.index}.log", "ab")  # noqa: SIM115 - handed to the daemon
    subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{node.netns}", "--", "unshare", "--mount", "--uts",
         "--propagation", "slave", "--", "/bin/sh", "-c", _INNER, "sh", node.hostname, str(work / "cg"), *dockerd],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    log.close()


def wait_daemon(node: Node, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if docker(node, "version", check=False, timeout=10).returncode == 0:
            return
        time.sleep(0.3)
    tail = (LOGS / f"n{node.index}.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{node.hostname}: dockerd did not answer within {timeout:.0f} s:\n{tail}")


def swarm_state(node: Node) -> str:
    return docker(node, "info", "--format", "{{.Swarm.LocalNodeState}}", check=False, timeout=10).stdout.strip()


def _swarm(lab: list[Node], heartbeat: str) -> None:
    manager = lab[0]
    if swarm_state(manager) != "active":
        # The swarm's own address pool stays out of 10.0.0.0/8's default, which holds the lab LAN.
        docker(manager, "swarm", "init", "--advertise-addr", manager.addr, "--listen-addr", f"{manager.addr}:2377",
               "--dispatcher-heartbeat", heartbeat, "--default-addr-pool", "10.216.0.0/16",
               "--default-addr-pool-mask-length", "24")
    token = docker(manager, "swarm", "join-token", "-q", "worker").stdout.strip()
    for node in lab[1:]:
        if swarm_state(node) not in ("active", "pending"):
            docker(node, "swarm", "join", "--token", token, "--advertise-addr", node.addr,
                   "--listen-addr", f"{node.addr}:2377", f"{manager.addr}:2377")


def ready_nodes(manager: Node) -> int:
    out = docker(manager, "node", "ls", "--format", "{{.Status}}", check=False, timeout=10).stdout
    return out.split().count("Ready")


def _load_image(lab: list[Node], image: str) -> None:
    tar = DATA / "image.tar"
    if not tar.exists():
        _run("docker", "save", "-o", str(tar), image, timeout=120)
    for node in lab:
        if docker(node, "image", "inspect", image, check=False).returncode != 0:
            docker(node, "load", "-q", "-i", str(tar), timeout=120)


def up(count: int = DEFAULT_NODES, *, image: str = "hmsmgmt/sample:latest", heartbeat: str = "1s") -> list[Node]:
    """Create (or repair) the lab; idempotent. Returns its nodes, the first being the manager."""
    if os.geteuid() != 0:
        raise RuntimeError("the swarm lab needs root (network namespaces, dockerd)")
    if Path("/run/containerd/containerd.sock").exists():
        raise RuntimeError("a system containerd is running: every lab node would share it")
    if not shutil.which("dockerd"):
        raise RuntimeError("dockerd is not installed (apt-get install docker.io)")
    lab = nodes(count)
    RUN.mkdir(parents=True, exist_ok=True)
    _network(lab)
    for node in lab:
        start(node)
    for node in lab:
        wait_daemon(node)
    _swarm(lab, heartbeat)
    deadline = time.monotonic() + 60
    while ready_nodes(lab[0]) < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the lab's nodes did not all become Ready within 60 s")
        time.sleep(0.3)
    _load_image(lab, image)
    return lab


def _node_processes(node: Node) -> set[int]:
    """Every process we started for the node: whatever lives in its network namespace (dockerd,
    containerd, shims, docker-proxy) and in its cgroups (containers in their own namespaces)."""
    pids: set[int] = set()
    if _netns_exists(node.netns):
        pids |= {int(p) for p in _run("ip", "netns", "pids", node.netns, check=False).stdout.split()}
    for procs in Path("/sys/fs/cgroup/pids").glob(f"{node.cgroup}/**/cgroup.procs"):
        try:
            pids |= {int(p) for p in procs.read_text().split()}
        except OSError:
            pass
    pids.discard(os.getpid())
    return pids


def crash(node: Node) -> None:
    """A power loss: SIGKILL everything of the node at once; its namespace and data stay, so
    start() brings it back and it rejoins the swarm."""
    for _ in range(5):
        pids = _node_processes(node)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def down(count: int = DEFAULT_NODES) -> None:
    lab = nodes(count)
    # Containers first, while the daemons live: a task that ignores SIGTERM would hold each
    # daemon's shutdown for its stop timeout.
    if daemon_pid(lab[0]):
        ids = docker(lab[0], "service", "ls", "-q", check=False, timeout=20).stdout.split()
        if ids:
            docker(lab[0], "service", "rm", *ids, check=False, timeout=20)
    for node in lab:
        if daemon_pid(node):
            ids = docker(node, "ps", "-aq", check=False, timeout=20).stdout.split()
            if ids:
                docker(node, "rm", "-f", *ids, check=False, timeout=30)
    pids = [p for p in (daemon_pid(n) for n in lab) if p]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.2)
    for node in lab:
        crash(node)  # whatever is left: shims, proxies, container processes
        for cg in Path("/sys/fs/cgroup").glob(f"*/{node.cgroup}"):
            # Empty cgroup directories, deepest first (runc leaves them after a SIGKILL).
            for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [cg]:
                try:
                    d.rmdir()
                except OSError:
                    pass
        if _netns_exists(node.netns):
            _run("ip", "netns", "del", node.netns, check=False)
    if _link_exists(HOST_IF):
        _run("ip", "link", "del", HOST_IF, check=False)
    if _netns_exists(BRIDGE_NS):
        _run("ip", "netns", "del", BRIDGE_NS, check=False)
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        mount = line.split()[4]
        if mount.startswith((str(RUN), str(DATA))):
            _run("umount", "-l", mount, check=False)
    shutil.rmtree(RUN, ignore_errors=True)
    shutil.rmtree(DATA, ignore_errors=True)


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "up"
    if cmd == "up":
        lab = up()
        print(f"export DOCKER_HOST={lab[0].sock}")
        for node in lab:
            print(f"# {node.hostname}  {node.addr}  {node.sock}  pid {daemon_pid(node)}")
        print(docker(lab[0], "node", "ls").stdout, end="")
    elif cmd == "down":
        down()
    elif cmd in ("crash", "start") and len(argv) == 2:
        node = Node(int(argv[1]))
        if cmd == "crash":
            crash(node)
        else:
            start(node)
            wait_daemon(node)
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
