"""Probe capacity and detection time, with the real controller and django-q2 workers.

1. Capacity: N lightweight endpoints (one asyncio process listening on N loopback ports, standing
   in for N instances) probed every 5 s. Measured: CPU seconds used by the controller and the
   qcluster (all their processes) per wall second, minus the same processes idle over the same
   length of time in the same run (the baseline), as a share of 2 cores. Target: 500 endpoints
   within 10 % of 2 cores. Also: probes/s achieved vs expected, and the worst gap between two
   probes of one endpoint.
2. Detection: a real sample instance probed every 1 s (failure threshold 2). After `kill -9`
   (the reconciler sees the process gone) and after its /health starts answering 503 (only the
   probes can tell): seconds until the fail-over is audited and until a replacement runs.
   Target ≤ 3 s. Anchors: Kubernetes' default liveness probe (period 10 s × failureThreshold 3 ≈
   30 s) and Uptime Kuma's 20 s minimum check interval.

Run: .venv/bin/python bench/bench_probes.py  (PostgreSQL on 127.0.0.1; BENCH_ENDPOINTS,
BENCH_SECONDS, BENCH_DETECT_ROUNDS tune it; BENCH_SQLITE=1 runs on SQLite instead).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from common import PY, ROOT, env_for, fresh_database, manage, wait  # noqa: E402

ENDPOINTS = int(os.environ.get("BENCH_ENDPOINTS", "500"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "30"))
ROUNDS = int(os.environ.get("BENCH_DETECT_ROUNDS", "3"))
INTERVAL = 5.0
CORES = 2
TICK = os.sysconf("SC_CLK_TCK")

FLEET = r"""
import asyncio, json, sys
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n"
            b"Connection: close\r\n\r\n{\"status\":\"ok\"}")
async def handle(reader, writer):
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(RESPONSE)
        await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()
async def main(n):
    servers = [await asyncio.start_server(handle, "127.0.0.1", 0, backlog=64) for _ in range(n)]
    print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
    await asyncio.Event().wait()
asyncio.run(main(int(sys.argv[1])))
"""




def session_cpu(leader: int) -> float:
    """CPU seconds (user + system) of every live process in the session `leader` started."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == leader:  # fields[3] is the session id (stat field 6)
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def start(env: dict[str, str], *args: str) -> subprocess.Popen:
    log = open(Path(env["HMS_VAR_DIR"]) / f"{args[0]}-{len(args)}.log", "ab")  # noqa: SIM115
    return subprocess.Popen([PY, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cpu_share(procs: list[subprocess.Popen], seconds: float) -> float:
    before = sum(session_cpu(p.pid) for p in procs)
    time.sleep(seconds)
    return (sum(session_cpu(p.pid) for p in procs) - before) / seconds



def main() -> None:
    if os.environ.get("BENCH_SQLITE"):
        db_url = ""
        env = env_for("", HMS_LOG_LEVEL="WARNING")
        env.pop("DATABASE_URL")
    else:
        db_url = fresh_database("hms_bench_probes")
        env = env_for(db_url)
    os.environ.update(env)
    if not db_url:
        os.environ.pop("DATABASE_URL", None)
    manage(env, "migrate", "-v0")
    os.environ["DJANGO_SETTINGS_MODULE"] = "hmsmgmt.settings"
    import django

    django.setup()
    from django.utils import timezone

    from audit.models import AuditEntry
    from fleet import actions
    from fleet.models import Instance, Service
    from health.models import ProbeResult, ProbeSettings

    print(f"probe benchmark on {'SQLite' if not db_url else 'PostgreSQL'}, {os.cpu_count()} CPUs on this machine; "
          f"CPU counted: the controller's monitor loop + qcluster (all their processes), as a share of {CORES} cores")
    bench = Service(name="bench", command="{python} -m fleet.sample --port {port}")
    actions.save_service(bench, actor="system:bench", created=True)
    ProbeSettings.objects.filter(pk=bench.pk).update(probe_interval_seconds=INTERVAL, probe_timeout_seconds=1.0)

    # Capacity runs the controller's monitoring loop alone (the fan-out, roll-ups and SLA
    # evaluation the controller runs on its monitor thread): the reconciler would treat the bench
    # rows, which have no process behind them, as instances that never started and replace them.
    procs = [start(env, "controller", "--loops", "monitor"), start(env, "qcluster")]
    fleet = None
    try:
        time.sleep(8)  # both up and settled
        idle = cpu_share(procs, SECONDS)

        fleet = subprocess.Popen([PY, "-c", FLEET, str(ENDPOINTS)], stdout=subprocess.PIPE, start_new_session=True)
        ports = json.loads(fleet.stdout.readline())
        now = timezone.now()
        # Rows as the reconciler would leave them, without refs, so it neither fails them over
        # (no process to look for) nor starts more (desired == live).
        Instance.objects.bulk_create([
            Instance(service=bench, driver="process", state=Instance.State.RUNNING, health=Instance.Health.UP,
                     host="127.0.0.1", port=p, spec_version=bench.spec_version, started_at=now, healthy_at=now)
            for p in ports])
        Service.objects.filter(pk=bench.pk).update(desired_instances=ENDPOINTS)
        time.sleep(2 * INTERVAL)  # warm-up: every endpoint probed at least once
        t0 = timezone.now()
        loaded = cpu_share(procs, SECONDS)
        t1 = timezone.now()
        rows = list(ProbeResult.objects.filter(service=bench, at__gte=t0, at__lt=t1)
                    .values_list("instance_id", "at", "ok"))
        per_instance: dict[int, list] = {}
        for inst_id, at, _ok in rows:
            per_instance.setdefault(inst_id, []).append(at)
        gaps = sorted(max((b - a).total_seconds() for a, b in zip(ts, ts[1:], strict=False)) if len(ts) > 1
                      else float(SECONDS) for ts in (sorted(v) for v in per_instance.values()))
        expected = ENDPOINTS / INTERVAL
        achieved = len(rows) / (t1 - t0).total_seconds()
        failed = sum(1 for r in rows if not r[2])
        cost = max(0.0, loaded - idle)
        print("\n== capacity")
        print(f"endpoints: {ENDPOINTS} at a {INTERVAL:g} s interval -> expected {expected:.0f} probes/s, "
              f"achieved {achieved:.1f} probes/s ({achieved / expected:.0%}); failed probes: {failed}; "
              f"endpoints probed: {len(per_instance)}")
        print(f"worst gap between two probes of one endpoint: median {statistics.median(gaps):.2f} s, "
              f"max {gaps[-1]:.2f} s")
        print(f"CPU, monitor loop + workers idle (baseline): {idle:.3f} cores = {idle / CORES:.1%} of {CORES}")
        print(f"CPU, probing {ENDPOINTS} endpoints:            {loaded:.3f} cores = {loaded / CORES:.1%} of {CORES}")
        print(f"probing cost above the baseline: {cost:.3f} cores = {cost / CORES:.1%} of {CORES} cores "
              f"(target ≤ 10 %: {'met' if loaded / CORES <= 0.10 else 'NOT met'}); "
              f"{cost / max(achieved, 1e-9) * 1000:.2f} ms CPU per probe; "
              f"ratio loaded/idle {loaded / max(idle, 1e-9):.2f}x")
        kuma = ENDPOINTS / 20
        print(f"anchor: at Uptime Kuma's 20 s minimum interval the same {ENDPOINTS} endpoints get {kuma:.0f} checks/s; "
              f"here {achieved:.0f}/s, {achieved / kuma:.1f}x as fresh")

        # --- detection ---------------------------------------------------------------------------
        fleet_pid = fleet.pid
        os.killpg(fleet_pid, signal.SIGKILL)
        fleet.wait()
        fleet = None
        Service.objects.filter(pk=bench.pk).update(desired_instances=0)
        Instance.objects.filter(service=bench).update(state=Instance.State.STOPPED)
        stop(procs[0])
        procs[0] = start(env, "controller")  # detection needs the real controller: reconciler + monitor
        victim = Service(name="victim", command="{python} -m fleet.sample --port {port}")
        actions.save_service(victim, actor="system:bench", created=True)
        ProbeSettings.objects.filter(pk=victim.pk).update(probe_interval_seconds=1.0, probe_timeout_seconds=0.5,
                                                          failure_threshold=2)
        actions.scale_service(victim, 1, actor="system:bench")
        results: dict[str, list[tuple[float, float]]] = {"kill -9": [], "health 503": []}
        import requests

        for _round in range(ROUNDS):
            for mode in results:
                inst = wait(lambda: Instance.objects.filter(service=victim, state="running").exclude(port=None).first(),
                            60, "a running victim instance")
                # Let it be probed healthy first, so detection starts from a steady state.
                wait(lambda i=inst: ProbeResult.objects.filter(instance=i, ok=True).exists(), 30, "a good probe")
                before = AuditEntry.objects.filter(action="failover").count()
                t_fault = time.time()
                if mode == "kill -9":
                    os.kill(int(inst.ref), signal.SIGKILL)
                else:
                    requests.post(f"http://{inst.host}:{inst.port}/fault", json={"mode": "fail"}, timeout=2)
                entry = wait(lambda b=before: AuditEntry.objects.filter(action="failover").order_by("-id")
                             .first() if AuditEntry.objects.filter(action="failover").count() > b else None,
                             30, f"fail-over after {mode}")
                detected = entry.created_at.timestamp() - t_fault
                repl = wait(lambda e=entry: Instance.objects.filter(service=victim, state="running",
                                                                    healthy_at__gt=e.created_at).first(),
                            30, "a replacement")
                results[mode].append((detected, repl.healthy_at.timestamp() - t_fault))
                if mode == "health 503":
                    print(f"  (503 detected by {entry.actor}; evidence: "
                          f"{entry.payload.get('evidence', {}).get('consecutive_failures')} failed probes)")
        print("\n== detection (1 s probe interval, failure threshold 2)")
        for mode, runs in results.items():
            det = [d for d, _ in runs]
            rep = [r for _, r in runs]
            print(f"{mode:>10}: fail-over audited after median {statistics.median(det):.2f} s (max {max(det):.2f} s), "
                  f"replacement healthy after median {statistics.median(rep):.2f} s (max {max(rep):.2f} s); "
                  f"target ≤ 3 s: {'met' if max(det) <= 3 else 'NOT met'}")
        worst = max(d for runs in results.values() for d, _ in runs)
        print(f"anchors: Kubernetes default liveness (10 s × 3) ≈ 30 s -> {30 / worst:.0f}x faster; "
              f"Uptime Kuma 20 s minimum interval -> {20 / worst:.0f}x faster (worst case here {worst:.2f} s)")
    finally:
        if fleet is not None:
            try:
                os.killpg(fleet.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in procs:
            stop(p)
        from fleet.drivers.process import ProcessDriver

        for svc in Service.objects.all():
            ProcessDriver().remove_service(svc.spec())


if __name__ == "__main__":
    main()
