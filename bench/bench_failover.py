"""Fail-over and scaling on the real engines, in one run:

1. Kill an instance; time until a healthy replacement answers /health:
   - docker driver: our controller (`manage.py controller`) hears the container's `die` event and
     starts a new container at once (recording the fail-over meanwhile); the time ends when the new
     Instance row is `running` (the console routes to it) and that instance answers /health;
   - Swarm: the engine's own task restart (its default restart policy, as operators run it);
   - for reference, bare docker: no console at all, a plain script that on the `die` event runs
     `docker create` + `docker start` of a new container (ports as ours) until its first /health.
   Rounds alternate between the three; target: ours <= 0.5x Swarm's time. Then the same with a
   warm spare (HMS_DOCKER_WARM_SPARES=1, off by default: one extra running container per service).
2. Time to scale 0 -> 10 and 10 -> 0 per driver (process, docker, swarm), converged as
   POST /mgmt/scale {"wait": true} converges (running == desired, every instance healthy).

Run: .venv/bin/python bench/bench_failover.py  (needs PostgreSQL on 127.0.0.1, dockerd in a swarm).
BENCH_ROUNDS (default 5) sets the kills per driver.
"""

from __future__ import annotations

import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import PY, ROOT, env_for, fresh_database, manage  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SCALE_TO = 10
FLEET = 5


def healthy(host: str, port: int | None) -> bool:
    if not port:
        return False
    try:
        return requests.get(f"http://{host}:{port}/health", timeout=0.3).status_code == 200
    except requests.RequestException:
        return False


def main() -> None:
    db = fresh_database("hmsbench_failover")
    env = env_for(db, HMS_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "ERROR"))
    manage(env, "migrate", "-v0")
    os.environ.update({k: v for k, v in env.items() if k.startswith("HMS_") or k == "DATABASE_URL"})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hmsmgmt.settings")
    import django

    django.setup()
    import docker
    from django.conf import settings

    from console.demo import load_demo
    from fleet import actions, reconcile
    from fleet.drivers import get_driver
    from fleet.drivers.process import console_namespace
    from fleet.models import Service

    client = docker.from_env(timeout=10)
    if client.info().get("Swarm", {}).get("LocalNodeState") != "active":
        raise SystemExit("needs dockerd in an active swarm (docker swarm init --advertise-addr 127.0.0.1)")
    load_demo("docker")  # builds the sample image if it is missing
    Service.objects.update(desired_instances=0)
    services = {}
    for driver in ("process", "docker", "swarm"):
        svc = Service(
            name=f"bench-{driver}",
            driver=driver,
            image=settings.HMS_SAMPLE_IMAGE,
            command="{python} -m fleet.sample --port {port}",
        )
        services[driver] = actions.save_service(svc, actor="system:bench", created=True)
    selector = {"label": ["hmsmgmt.managed=true", f"hmsmgmt.namespace={console_namespace()}"]}

    def converge_until(svc: Service, check, timeout: float = 120.0) -> float:  # type: ignore[no-untyped-def]
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            st = reconcile.converge(svc.pk, component="bench")
            if st.converged and check():
                return time.monotonic() - started
            time.sleep(0.05)
        raise RuntimeError(f"{svc.name} did not converge in {timeout} s")

    def engine_running(svc: Service) -> int:
        return len([o for o in get_driver(svc.driver).list_instances(svc.spec()) if o.alive])

    try:
        # --- scaling 0 -> 10 -> 0, as the API's wait converges --------------------------------------
        scale_rows = []
        for driver, svc in services.items():
            actions.scale_service(svc, SCALE_TO, actor="system:bench")
            up = converge_until(svc, lambda s=svc: engine_running(s) == SCALE_TO)
            actions.scale_service(svc, 0, actor="system:bench")
            down = converge_until(svc, lambda s=svc: engine_running(s) == 0)
            scale_rows.append((driver, up, down))

        # --- fail-over: kill one, time to a healthy replacement -----------------------------------------
        for driver in ("docker", "swarm"):
            actions.scale_service(services[driver], FLEET, actor="system:bench")
            converge_until(services[driver], lambda s=services[driver]: engine_running(s) == FLEET)
        times: dict[str, list[float]] = {"docker": [], "docker+spare": [], "swarm": [], "bare": []}
        bare = BareDocker(client, settings.HMS_SAMPLE_IMAGE, selector)
        # Phase 1: our controller as configured by default, rounds alternating with Swarm's restart.
        with Controller(env, "plain"):
            # Kill only instances that lived past actions.EARLY_DEATH: a young death counts toward
            # crash-loop back-off, which would (rightly) delay our replacement; Swarm has no such
            # brake. With FLEET instances and the oldest killed each round, every victim is old.
            time.sleep(actions.EARLY_DEATH.total_seconds() + 1)
            for _round in range(ROUNDS):
                times["docker"].append(kill_and_time(client, "docker", services["docker"]))
                times["swarm"].append(kill_and_time(client, "swarm", services["swarm"]))
                times["bare"].append(bare.kill_and_time())
        # Phase 2: the same with one warm spare per docker service (HMS_DOCKER_WARM_SPARES=1).
        with Controller({**env, "HMS_DOCKER_WARM_SPARES": "1"}, "spare"):
            wait_for_spare(client, selector)
            time.sleep(actions.EARLY_DEATH.total_seconds() + 1)
            for _round in range(ROUNDS):
                times["docker+spare"].append(kill_and_time(client, "docker", services["docker"]))
                wait_for_spare(client, selector)
                times["swarm"].append(kill_and_time(client, "swarm", services["swarm"]))
    finally:
        for s in client.api.services(filters=selector):
            client.api.remove_service(s["ID"])
        for c in client.api.containers(all=True, filters=selector):
            try:
                client.api.remove_container(c["Id"], force=True)
            except docker.errors.NotFound:
                pass  # a Swarm task container, gone with its service
        get_driver("process").remove_service(services["process"].spec())

    print("\nscale (converged: running == desired, all healthy), seconds")
    print(f"{'driver':<10}{'0 -> 10':>10}{'10 -> 0':>10}")
    for driver, up, down in scale_rows:
        print(f"{driver:<10}{up:>10.2f}{down:>10.2f}")
    print(f"\nkill -> healthy replacement answering /health, seconds ({ROUNDS} kills each)")
    labels = {
        "docker": "docker (our controller)",
        "docker+spare": "docker + warm spare",
        "swarm": "swarm (its own restart)",
        "bare": "bare docker (no console)",
    }
    for driver, values in times.items():
        label = labels[driver]
        print(
            f"{label:<26} median {statistics.median(values):6.2f}  mean {statistics.mean(values):6.2f}  "
            f"min {min(values):6.2f}  max {max(values):6.2f}"
        )
    swarm = statistics.median(times["swarm"])
    for key in ("docker", "docker+spare", "bare"):
        ratio = statistics.median(times[key]) / swarm
        verdict = (
            "reference: no console" if key == "bare" else (f"target <= 0.5x -> {'OK' if ratio <= 0.5 else 'MISSED'}")
        )
        print(f"ratio {labels[key]} / swarm (median): {ratio:.2f}x  ({verdict})")


class Controller:
    """`manage.py controller` for the duration of a with-block, its log under HMS_VAR_DIR."""

    def __init__(self, env: dict[str, str], tag: str) -> None:
        self.env, self.log = env, Path(env["HMS_VAR_DIR"]) / f"controller-{tag}.log"

    def __enter__(self) -> Controller:
        self.proc = subprocess.Popen(
            [PY, str(ROOT / "manage.py"), "controller"],
            env=self.env,
            cwd=ROOT,
            start_new_session=True,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            print(f"controller ignored SIGTERM for 20 s (see {self.log}); killing it")
            self.proc.kill()
            self.proc.wait(timeout=10)


class BareDocker:
    """What the engine needs without any console: kill a container and, the moment its `die`
    event arrives (what our controller waits for too), create and start a new one (published on
    127.0.0.1 as the docker driver publishes) until its /health answers. FLEET containers, labelled
    like ours (so the bench's clean-up removes them) but of a service the console does not know, so
    no controller touches them."""

    def __init__(self, client, image: str, selector: dict) -> None:  # type: ignore[no-untyped-def]
        import docker

        self.api, self.image = client.api, image
        self.labels = {**dict(label.split("=", 1) for label in selector["label"]), "hmsmgmt.service": "bench-bare"}
        self.deaths: queue.SimpleQueue[str] = queue.SimpleQueue()
        events = docker.from_env(timeout=None, version="auto").api.events(
            filters={"type": "container", "event": ["die"], "label": ["hmsmgmt.service=bench-bare"]}, decode=True
        )
        threading.Thread(target=lambda: [self.deaths.put(e["id"]) for e in events], daemon=True).start()
        self.fleet = [self.start()[0] for _ in range(FLEET)]

    def start(self) -> tuple[str, int]:
        api = self.api
        cid = api.create_container(
            self.image,
            labels=self.labels,
            environment={"PORT": "8080"},
            ports=[8080],
            host_config=api.create_host_config(port_bindings={8080: ("127.0.0.1",)}, restart_policy={"Name": "no"}),
        )["Id"]
        api.start(cid)
        ports = api.inspect_container(cid)["NetworkSettings"]["Ports"]["8080/tcp"]
        return cid, int(ports[0]["HostPort"])

    def kill_and_time(self) -> float:
        victim = self.fleet.pop(0)
        started = time.monotonic()
        killer = threading.Thread(target=self.api.kill, args=(victim,))
        killer.start()
        while self.deaths.get(timeout=30) != victim:
            pass
        cid, port = self.start()
        while not healthy("127.0.0.1", port):
            time.sleep(0.005)
        elapsed = time.monotonic() - started
        killer.join()
        self.api.remove_container(victim, force=True)
        self.fleet.append(cid)
        time.sleep(1.0)
        return elapsed


def wait_for_spare(client, selector) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        spares = client.api.containers(filters={"label": [*selector["label"], "hmsmgmt.role=spare"]})
        if spares and healthy("127.0.0.1", next((p.get("PublicPort") for p in spares[0]["Ports"]), None)):
            return
        time.sleep(0.1)
    raise RuntimeError("no warm spare appeared")


def kill_and_time(client, driver: str, svc) -> float:  # type: ignore[no-untyped-def]
    """Kill the oldest instance of svc; return the seconds until a replacement answers /health.

    docker: the replacement is the instance our console routes to (its row turns running) and
    answers /health. swarm: a new running task answers /health, however fast we notice it."""
    from fleet.drivers import get_driver
    from fleet.models import Instance

    drv = get_driver(driver)
    spec = svc.spec()
    before = [o for o in drv.list_instances(spec) if o.alive and healthy(o.host, o.port) and not o.extra.get("spare")]
    old_refs = {o.ref for o in drv.list_instances(spec)}
    last_row = Instance.objects.filter(service=svc).order_by("-pk").values_list("pk", flat=True).first() or 0
    victim = min(before, key=lambda o: o.started_at)  # the oldest
    container = victim.ref if driver == "docker" else victim.extra["container"]
    started = time.monotonic()
    client.api.kill(container)
    while time.monotonic() - started < 120:
        if driver == "docker":
            fresh = Instance.objects.filter(service=svc, pk__gt=last_row, state=Instance.State.RUNNING)
            candidates = [(i.host, i.port) for i in fresh]
        else:
            candidates = [(o.host, o.port) for o in drv.list_instances(spec) if o.ref not in old_refs and o.alive]
        if any(healthy(host, port) for host, port in candidates):
            elapsed = time.monotonic() - started
            wait_until_all_healthy(drv, svc)
            return elapsed
        time.sleep(0.02)
    raise RuntimeError(f"no replacement for the killed {driver} instance within 120 s")


def wait_until_all_healthy(drv, svc) -> None:  # type: ignore[no-untyped-def]
    """Before the next kill: the fleet is back to FLEET healthy instances."""
    from fleet.models import Instance

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if drv.name == "docker":
            rows = Instance.objects.filter(service=svc, state=Instance.State.RUNNING)
            count = len([i for i in rows if healthy(i.host, i.port)])
        else:
            count = len([o for o in drv.list_instances(svc.spec()) if o.alive and healthy(o.host, o.port)])
        if count >= FLEET:
            return
        time.sleep(0.1)


if __name__ == "__main__":
    main()
