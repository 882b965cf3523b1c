"""Fail-over and scaling on the real engines, in one run:

1. Kill an instance; time until a healthy replacement answers /health:
   - docker driver: our controller (`manage.py controller`, default 500 ms tick) notices and starts
     a new container;
   - Swarm: the engine's own task restart (its default restart policy, as operators run it).
   Rounds alternate between the two; target: ours <= 0.5x Swarm's time.
2. Time to scale 0 -> 10 and 10 -> 0 per driver (process, docker, swarm), converged as
   POST /mgmt/scale {"wait": true} converges (running == desired, every instance healthy).

Run: .venv/bin/python bench/bench_failover.py  (needs PostgreSQL on 127.0.0.1, dockerd in a swarm).
BENCH_ROUNDS (default 5) sets the kills per driver.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import PY, ROOT, env_for, fresh_database, manage  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SCALE_TO = 10


def healthy(host: str, port: int | None) -> bool:
    if not port:
        return False
    try:
        return requests.get(f"http://{host}:{port}/health", timeout=0.3).status_code == 200
    except requests.RequestException:
        return False


def main() -> None:
    db = fresh_database("hmsbench_failover")
    env = env_for(db, HMS_LOG_LEVEL="ERROR")
    manage(env, "migrate", "-v0")
    os.environ.update({k: v for k, v in env.items() if k.startswith("HMS_") or k == "DATABASE_URL"})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hmsmgmt.settings")
    import django

    django.setup()
    import docker
    from django.conf import settings

    from hmsmgmt.demo import load_demo
    from services import actions, reconcile
    from services.drivers import get_driver
    from services.drivers.process import console_namespace
    from services.models import Service

    client = docker.from_env(timeout=10)
    if client.info().get("Swarm", {}).get("LocalNodeState") != "active":
        raise SystemExit("needs dockerd in an active swarm (docker swarm init --advertise-addr 127.0.0.1)")
    load_demo("docker")  # builds the sample image if it is missing
    Service.objects.update(desired_instances=0)
    services = {}
    for driver in ("process", "docker", "swarm"):
        svc = Service(name=f"bench-{driver}", driver=driver, image=settings.HMS_SAMPLE_IMAGE,
                      command="{python} -m services.sample --port {port}")
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
            actions.scale_service(services[driver], 3, actor="system:bench")
            converge_until(services[driver], lambda s=services[driver]: engine_running(s) == 3)
        controller = subprocess.Popen([PY, str(ROOT / "manage.py"), "controller"], env=env, cwd=ROOT,
                                                    start_new_session=True)
        times: dict[str, list[float]] = {"docker": [], "swarm": []}
        try:
            time.sleep(2)
            for _round in range(ROUNDS):
                for driver in ("docker", "swarm"):
                    times[driver].append(kill_and_time(client, driver, services[driver], selector))
        finally:
            controller.terminate()
            controller.wait(timeout=20)
    finally:
        for c in client.api.containers(all=True, filters=selector):
            client.api.remove_container(c["Id"], force=True)
        for s in client.api.services(filters=selector):
            client.api.remove_service(s["ID"])
        get_driver("process").remove_service(services["process"].spec())

    print("\nscale (converged: running == desired, all healthy), seconds")
    print(f"{'driver':<10}{'0 -> 10':>10}{'10 -> 0':>10}")
    for driver, up, down in scale_rows:
        print(f"{driver:<10}{up:>10.2f}{down:>10.2f}")
    print(f"\nkill -> healthy replacement answering /health, seconds ({ROUNDS} kills each)")
    for driver, values in times.items():
        label = "docker (our controller)" if driver == "docker" else "swarm (its own restart)"
        print(f"{label:<26} median {statistics.median(values):6.2f}  mean {statistics.mean(values):6.2f}  "
              f"min {min(values):6.2f}  max {max(values):6.2f}")
    ratio = statistics.median(times["docker"]) / statistics.median(times["swarm"])
    print(f"\nratio docker/swarm (median): {ratio:.2f}x  (target <= 0.5x) -> {'OK' if ratio <= 0.5 else 'MISSED'}")


def kill_and_time(client, driver: str, svc, selector) -> float:  # type: ignore[no-untyped-def]
    """Kill one running instance of svc; return the seconds until a new one answers /health."""
    from services.drivers import get_driver

    drv = get_driver(driver)
    spec = svc.spec()
    before = [o for o in drv.list_instances(spec) if o.alive and healthy(o.host, o.port)]
    old_refs = {o.ref for o in drv.list_instances(spec)}
    victim = before[0]
    container = victim.ref if driver == "docker" else victim.extra["container"]
    started = time.monotonic()
    client.api.kill(container)
    while time.monotonic() - started < 120:
        for o in drv.list_instances(spec):
            if o.ref not in old_refs and o.alive and healthy(o.host, o.port):
                elapsed = time.monotonic() - started
                wait_until_all_healthy(drv, spec, len(before))
                return elapsed
        time.sleep(0.02)
    raise RuntimeError(f"no replacement for the killed {driver} instance within 120 s")


def wait_until_all_healthy(drv, spec, count: int) -> None:  # type: ignore[no-untyped-def]
    """Before the next kill: the fleet is back to `count` healthy instances."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len([o for o in drv.list_instances(spec) if o.alive and healthy(o.host, o.port)]) >= count:
            return
        time.sleep(0.1)


if __name__ == "__main__":
    main()
