"""Node loss on a real three-node Swarm (tests/swarmlab.py), the console beside Swarm alone, in one run.

Each round kills a worker node hard (`swarmlab.crash`: its dockerd, shims and containers SIGKILLed)
while a service of REPLICAS replicas runs 2 per node, and times from the crash:

1. Swarm alone (the baseline; no console process runs): a plain `docker service create` on the
   lab (host-mode port, dnsrr, restart on any exit) with the CLI's default 5 s restart delay,
   side "swarm"; and with `--restart-delay 0s`, side "swarm-0s": the task spec the swarm driver
   creates (docker-py's RestartPolicy sends Delay 0) and the recipe's setting. Polling the
   manager's API (`docker service ps` / `docker node ls`, through the SDK): when Swarm says the
   node is down, and when REPLICAS tasks run on the other nodes.
2. The console: a swarm Service of the console, scaled through fleet.actions, driven by a real
   `manage.py controller` (every loop, default settings) pointed at the lab's manager as
   tests/fleet/test_multinode.py points it (DOCKER_HOST, HMS_SWARM_NODE_ENGINES). From the
   console's database: the node shown down (SwarmNode.state), the lost replicas shown (no running
   Instance left on the node), REPLICAS running Instances on the other nodes, and those healthy
   (probed up at their node's address). Swarm's own view of these same crashes is polled as in 1.

Between rounds the crashed node is started again; in the console rounds the service's
`rebalance: on-recovery` spreads the replicas back 2/2/2 (timed too), in the baseline rounds the
service is created afresh. Victims alternate between the two workers (the manager, node 1, stays).

Run: .venv/bin/python bench/bench_nodes.py  (root; PostgreSQL on 127.0.0.1; the default dockerd
with the sample image or able to build it; no other hmslab lab on the machine). BENCH_ROUNDS
(default 3) sets the crashes per side; the lab is removed at the end, whatever happens. The whole
run is bounded by BENCH_NODES_BUDGET seconds (default 300) before the lab is torn down.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import PY, ROOT, env_for, fresh_database, manage  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BUDGET = int(os.environ.get("BENCH_NODES_BUDGET", "300"))
REPLICAS = 6
HEARTBEAT = "1s"  # the lab's dispatcher heartbeat (Swarm's default is 5 s)
WATCH_TIMEOUT = 60.0  # per crash: every figure of the round, or the bench stops
POLL = 0.05
LAB_NET = "10.213.0.0/24"
# Swarm alone: side -> extra `docker service create` options; "swarm-0s" is the driver's task spec
BASELINES = {"swarm": (), "swarm-0s": ("--restart-delay", "0s")}

# figure key -> label; a round records the seconds from the crash for each
SWARM_KEYS = {"swarm_down": "Swarm: node down", "swarm_back": f"Swarm: {REPLICAS} running elsewhere"}
CONSOLE_KEYS = {"console_down": "console: node shown down", "console_lost": "console: lost replicas shown",
                "console_back": f"console: {REPLICAS} running elsewhere",
                "console_healthy": f"console: {REPLICAS} healthy elsewhere"}


def _budget_spent(_signum: int, _frame: object) -> None:
    raise SystemExit(f"bench over its budget of {BUDGET} s (BENCH_NODES_BUDGET); tearing the lab down")


def lab_in_use() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("hmslab")]


def main() -> None:
    from tests import swarmlab

    if os.geteuid() != 0:
        raise SystemExit("the swarm lab needs root (network namespaces, dockerd)")
    if busy := lab_in_use():
        raise SystemExit(f"an hmslab lab exists already ({', '.join(busy)}): another run (CI's multi-node test?) "
                         "may be using it; if it is yours, remove it with `python -m tests.swarmlab down`")
    db = fresh_database("hmsbench_nodes")
    env = env_for(db, HMS_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "ERROR"), HMS_OUTBOUND_ALLOW=LAB_NET)
    manage(env, "migrate", "-v0")
    os.environ.update({k: v for k, v in env.items() if k.startswith("HMS_") or k == "DATABASE_URL"})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hmsmgmt.settings")
    import django

    django.setup()
    import docker
    from django.conf import settings

    from fleet.sample.image import build_sample_image, image_exists

    host = docker.from_env(timeout=30)  # the machine's own engine: only the sample image is read from it
    if not image_exists(settings.HMS_SAMPLE_IMAGE, client=host):
        build_sample_image(settings.HMS_SAMPLE_IMAGE, client=host)
    host.close()

    signal.signal(signal.SIGALRM, _budget_spent)
    signal.alarm(BUDGET)
    started = time.monotonic()
    rows: list[dict] = []
    rebalance_times: list[float] = []
    try:
        lab = swarmlab.up(image=settings.HMS_SAMPLE_IMAGE, heartbeat=HEARTBEAT)
        print(f"lab up in {time.monotonic() - started:.1f} s: {', '.join(f'{n.hostname} {n.addr}' for n in lab)}",
              flush=True)
        api = docker.APIClient(base_url=lab[0].sock, timeout=10, version="auto")
        ids = {n["Description"]["Hostname"]: n["ID"] for n in api.nodes()}
        workers = [n for n in lab if n is not lab[0]]
        victims = [workers[(-1 - r) % len(workers)] for r in range(ROUNDS)]  # n3, n2, n3, ...

        for r, victim in enumerate(victims, 1):
            for side, extra in BASELINES.items():
                rows.append(baseline_round(api, swarmlab, lab, victim, ids[victim.hostname], r, side, extra))
        rows += console_rounds(api, swarmlab, lab, victims, ids, env, rebalance_times)
    finally:
        signal.alarm(0)
        print("removing the lab", flush=True)
        swarmlab.down()
        if rows:  # a failed run still prints the rounds it measured
            report(rows, rebalance_times, time.monotonic() - started)


# --- polling -------------------------------------------------------------------------------------
def swarm_running(api, service_id: str) -> Counter[str]:  # type: ignore[no-untyped-def]
    """Running tasks of a service meant to run, by node id (Swarm's own view, as `docker service ps`)."""
    tasks = api.tasks(filters={"service": service_id, "desired-state": "running"})
    return Counter(t["NodeID"] for t in tasks if (t.get("Status") or {}).get("State") == "running")


def node_state(api, node_id: str) -> str:  # type: ignore[no-untyped-def]
    return (api.inspect_node(node_id).get("Status") or {}).get("State", "")


def wait(predicate, timeout: float, what: str, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def watch(api, victim, victim_id: str, service_id: str, t0: float, console_svc=None) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Poll Swarm (and the console's database when console_svc is given) every POLL seconds and
    record, in seconds from t0, the first time each figure holds."""
    marks: dict[str, float] = {}
    want = set(SWARM_KEYS) | (set(CONSOLE_KEYS) if console_svc is not None else set())

    def mark(key: str, holds: bool) -> None:
        if holds and key not in marks:
            marks[key] = time.monotonic() - t0

    while not want <= marks.keys():
        if time.monotonic() - t0 > WATCH_TIMEOUT:
            missing = ", ".join(sorted(want - marks.keys()))
            raise SystemExit(f"{victim.hostname} crash: not seen within {WATCH_TIMEOUT:.0f} s: {missing}")
        mark("swarm_down", node_state(api, victim_id) == "down")
        running = swarm_running(api, service_id)
        mark("swarm_back", sum(n for node, n in running.items() if node != victim_id) >= REPLICAS)
        if console_svc is not None:
            from fleet.models import Instance, SwarmNode

            mark("console_down", SwarmNode.objects.filter(hostname=victim.hostname, state="down").exists())
            live = Instance.objects.filter(service=console_svc, state=Instance.State.RUNNING)
            mark("console_lost", not live.filter(node=victim.hostname).exists())
            elsewhere = live.exclude(node=victim.hostname)
            mark("console_back", elsewhere.count() >= REPLICAS)
            mark("console_healthy", elsewhere.filter(health=Instance.Health.UP).count() >= REPLICAS)
        time.sleep(POLL)
    return marks


# --- 1. Swarm alone --------------------------------------------------------------------------------
def baseline_round(api, swarmlab, lab, victim, victim_id: str, r: int, side: str,  # type: ignore[no-untyped-def]
                   extra: tuple[str, ...]) -> dict:
    from django.conf import settings

    name = f"hmsbench-{side}-{r}"
    service_id = swarmlab.docker(
        lab[0], "service", "create", "--detach", "--quiet", "--no-resolve-image", "--name", name,
        "--replicas", str(REPLICAS), "--endpoint-mode", "dnsrr", "--publish", "mode=host,target=8080",
        "--env", "PORT=8080", "--restart-condition", "any", "--stop-grace-period", "5s", *extra,
        settings.HMS_SAMPLE_IMAGE).stdout.strip()
    try:
        wait(lambda: sorted(swarm_running(api, service_id).values()) == [2, 2, 2], 60,
             f"{name}: {REPLICAS} tasks running 2 per node")
        t0 = time.monotonic()
        swarmlab.crash(victim)
        marks = watch(api, victim, victim_id, service_id, t0)
        print(f"{side} alone, round {r}: {victim.hostname} down after {marks['swarm_down']:.2f} s, "
              f"{REPLICAS} running elsewhere after {marks['swarm_back']:.2f} s", flush=True)
        restart(api, swarmlab, victim, victim_id)
    finally:
        swarmlab.docker(lab[0], "service", "rm", service_id, check=False, timeout=20)
    return {"side": side, "round": r, "node": victim.hostname, **marks}


def restart(api, swarmlab, victim, victim_id: str) -> None:  # type: ignore[no-untyped-def]
    swarmlab.start(victim)
    swarmlab.wait_daemon(victim)
    wait(lambda: node_state(api, victim_id) == "ready", 60, f"{victim.hostname} ready again")


# --- 2. the console ----------------------------------------------------------------------------------
def console_rounds(api, swarmlab, lab, victims, ids, env, rebalance_times: list[float]) -> list[dict]:  # type: ignore[no-untyped-def]
    from django.conf import settings

    from audit.models import AuditEntry
    from fleet import actions
    from fleet.drivers import get_driver
    from fleet.drivers.process import console_namespace
    from fleet.models import Instance, Service, SwarmNode

    lab_env = {"DOCKER_HOST": lab[0].sock,
               "HMS_SWARM_NODE_ENGINES": ",".join(f"{n.hostname}={n.sock}" for n in lab[1:])}
    os.environ.update(lab_env)
    settings.HMS_SWARM_NODE_ENGINES = lab_env["HMS_SWARM_NODE_ENGINES"]
    get_driver.cache_clear()

    svc = actions.save_service(
        Service(name="bench-nodes", driver="swarm", image=settings.HMS_SAMPLE_IMAGE, port=8080,
                rebalance=Service.Rebalance.ON_RECOVERY),
        actor="system:bench", created=True)

    def spread() -> Counter[str]:
        running = Instance.objects.filter(service=svc, state=Instance.State.RUNNING)
        return Counter(running.values_list("node", flat=True))

    def settled() -> bool:
        return (sorted(spread().values()) == [2, 2, 2] and not Service.objects.get(pk=svc.pk).surge
                and Instance.objects.filter(service=svc, state=Instance.State.RUNNING,
                                            health=Instance.Health.UP).count() == REPLICAS
                and SwarmNode.objects.filter(state="ready").count() == len(lab))

    rows = []
    with Controller({**env, **lab_env}) as controller:
        outcome = actions.scale_service(svc, REPLICAS, actor="system:bench")
        if not outcome.decision.allowed:
            raise SystemExit(f"scaling to {REPLICAS} refused: {outcome.decision}")
        wait(settled, 90, f"the console's {REPLICAS} replicas healthy, 2 per node (see {controller.log})")
        found = api.services(filters={"label": ["hmsmgmt.managed=true", f"hmsmgmt.namespace={console_namespace()}",
                                                f"hmsmgmt.service_id={svc.spec().key}"]})
        service_id = found[0]["ID"]
        for r, victim in enumerate(victims, 1):
            before = AuditEntry.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
            t0 = time.monotonic()
            swarmlab.crash(victim)
            marks = watch(api, victim, ids[victim.hostname], service_id, t0, console_svc=svc)
            failovers = AuditEntry.objects.filter(pk__gt=before, action="failover",
                                                  payload__node=victim.hostname).count()
            print(f"console, round {r}: {victim.hostname} shown down after {marks['console_down']:.2f} s "
                  f"(Swarm: {marks['swarm_down']:.2f} s), {REPLICAS} running elsewhere after "
                  f"{marks['console_back']:.2f} s (Swarm: {marks['swarm_back']:.2f} s), "
                  f"{failovers} fail-overs audited", flush=True)
            rows.append({"side": "console", "round": r, "node": victim.hostname, "failovers": failovers, **marks})
            back = time.monotonic()
            restart(api, swarmlab, victim, ids[victim.hostname])
            wait(settled, 90, f"rebalanced 2/2/2 after {victim.hostname} returned (have {dict(spread())}; "
                              f"see {controller.log})")
            rebalance_times.append(time.monotonic() - back)
        actions.scale_service(svc, 0, actor="system:bench")
    return rows


class Controller:
    """`manage.py controller` (every loop) for the duration of a with-block, its log under HMS_VAR_DIR."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env, self.log = env, Path(env["HMS_VAR_DIR"]) / "controller-nodes.log"

    def __enter__(self) -> Controller:
        self.proc = subprocess.Popen([PY, str(ROOT / "manage.py"), "controller"], env=self.env, cwd=ROOT,
                                     start_new_session=True, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            print(f"controller ignored SIGTERM for 20 s (see {self.log}); killing it")
            self.proc.kill()
            self.proc.wait(timeout=10)


# --- figures -----------------------------------------------------------------------------------------
def report(rows: list[dict], rebalance_times: list[float], took: float) -> None:
    from django.conf import settings

    def column(side: str, key: str) -> list[float]:
        return [row[key] for row in rows if row["side"] == side and key in row]

    def fmt(values: list[float]) -> str:
        return f"{statistics.median(values):6.2f} {max(values):6.2f}" if values else f"{'-':>6} {'-':>6}"

    print(f"\nnode loss: {REPLICAS} replicas 2 per node on 3 nodes, a worker crashed; seconds from the crash")
    print(f"(dispatcher heartbeat {HEARTBEAT}, controller tick {settings.HMS_CONTROLLER_TICK_MS} ms, "
          f"{ROUNDS} crashes per side, run {took:.0f} s)")
    head = ["side", "round", "node", "swarm down", "swarm back", "console down", "lost shown", "console back",
            "healthy", "failovers"]
    keys = ["swarm_down", "swarm_back", "console_down", "console_lost", "console_back", "console_healthy"]
    widths = [8, 6, 10] + [13] * (len(head) - 3)
    print("".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True)))
    for row in rows:
        cells = [row["side"], str(row["round"]), row["node"]]
        cells += [f"{row[k]:.2f}" if k in row else "-" for k in keys]
        cells.append(str(row.get("failovers", "-")))
        print("".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))

    width = 50
    print(f"\n{'':<{width}}{'p50':>6} {'max':>6}")
    for side in BASELINES:
        for key, label in SWARM_KEYS.items():
            print(f"{side + ' alone -- ' + label:<{width}}{fmt(column(side, key))}")
    for key, label in {**SWARM_KEYS, **CONSOLE_KEYS}.items():
        print(f"{'console rounds -- ' + label:<{width}}{fmt(column('console', key))}")
    if rebalance_times:
        print(f"{'console rounds -- node back -> rebalanced 2/2/2':<{width}}{fmt(rebalance_times)}")

    seen = column("console", "console_back")
    swarm_with = column("console", "swarm_back")
    if not (seen and swarm_with):
        return
    print()
    for side in BASELINES:
        if base := column(side, "swarm_back"):
            ratio = statistics.median(seen) / statistics.median(base)
            print(f"ratio console {REPLICAS} running / {side} alone (p50): {ratio:.2f}x")
    if base := column("swarm-0s", "swarm_back"):
        slower = statistics.median(swarm_with) / statistics.median(base)
        print(f"ratio Swarm's own rescheduling with the console / without, same task spec (p50): {slower:.2f}x  "
              f"(target: not slower, <= 1.2x -> {'OK' if slower <= 1.2 else 'MISSED'})")
    lag = [row["console_lost"] - row["swarm_down"] for row in rows if row["side"] == "console"]
    print(f"lost capacity shown after Swarm knew (p50 / max): {statistics.median(lag):.2f} / {max(lag):.2f} s  "
          f"(target <= 1 s -> {'OK' if max(lag) <= 1.0 else 'MISSED'})")

if __name__ == "__main__":
    main()
