"""Probe cadence, cost and detection time, with the real probe process and controller.

1. Cadence at fleet size: N lightweight endpoints (one asyncio process listening on N loopback
   ports, standing in for N instances) probed every INTERVAL s by the probe process
   (`manage.py controller --loops probes`, as `up` runs it). Measured over BENCH_SECONDS:
   - the share of expected probes stored: ProbeResult rows in the window against N × seconds /
     interval (target ≥ 99 %), the fewest rows of one endpoint, and the worst gap between two
     probes of one endpoint;
   - the CPU of the probe process (all its threads) per wall second, minus the same process idle
     (no instance to probe) over the same length of time in the same run, as a share of one core
     (target ≤ 25 %);
   - its resident memory after the warm-up and at the end of the window (flat: no growth per probe).
2. Detection: a real sample instance probed every 1 s (failure threshold 2), with the controller
   and the probe process as `up` runs them. After `kill -9` (the reconciler sees the process
   gone) and after its /health starts answering 503 (only the probes can tell): seconds until the
   fail-over is audited and until a replacement runs. Target ≤ 3 s. Anchors: Kubernetes' default
   liveness probe (period 10 s × failureThreshold 3 ≈ 30 s) and Uptime Kuma's 20 s minimum check
   interval.

Run: .venv/bin/python bench/bench_probes.py  (PostgreSQL on 127.0.0.1; BENCH_ENDPOINTS (300),
BENCH_INTERVAL (1), BENCH_SECONDS (30), BENCH_DETECT_ROUNDS (3) tune it; BENCH_SQLITE=1 runs on
SQLite instead).
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

ENDPOINTS = int(os.environ.get("BENCH_ENDPOINTS", "300"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "30"))
ROUNDS = int(os.environ.get("BENCH_DETECT_ROUNDS", "3"))
INTERVAL = float(os.environ.get("BENCH_INTERVAL", "1"))
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
# What probes: the probe process alone (its own loop; nothing else in it competes for its cadence).
PROBING = [("controller", "--loops", "probes")]
# The controller as `up` runs it next to the probe process: every loop but the probes.
CONTROLLER = ("controller", "--loops", "tick,monitor,sealer,failover")

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


def session_rss_mb(leader: int) -> float:
    """Resident memory (MB) of every live process in the session `leader` started."""
    pages = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3]) != leader:
                continue
            pages += int((entry / "statm").read_text().split()[1])
        except OSError:
            continue
    return pages * PAGE_KB / 1024


def start(env: dict[str, str], *args: str) -> subprocess.Popen:
    log = open(Path(env["HMS_VAR_DIR"]) / f"{'_'.join(args).replace(',', '+')}.log", "ab")  # noqa: SIM115
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
          f"CPU counted: the probe process ({' '.join(PROBING[0])}; all its threads), as a share of one core")
    bench = Service(name="bench", command="{python} -m fleet.sample --port {port}")
    actions.save_service(bench, actor="system:bench", created=True)
    ProbeSettings.objects.filter(pk=bench.pk).update(probe_interval_seconds=INTERVAL,
                                                     probe_timeout_seconds=min(1.0, INTERVAL))

    # Cadence runs the probe process alone: the reconciler would treat the bench rows, which have
    # no process behind them, as instances that never started and replace them.
    procs = [start(env, *argv) for argv in PROBING]
    fleet = None
    try:
        time.sleep(8)  # up and settled
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
        time.sleep(max(5.0, 2 * INTERVAL))  # warm-up: every endpoint probed, the process at its working size
        rss_start = sum(session_rss_mb(p.pid) for p in procs)
        t0 = timezone.now()
        loaded = cpu_share(procs, SECONDS)
        t1 = timezone.now()
        rss_end = sum(session_rss_mb(p.pid) for p in procs)
        time.sleep(2)  # probes begun before t1 are stored a little later: count them too
        rows = list(ProbeResult.objects.filter(service=bench, at__gte=t0, at__lt=t1)
                    .values_list("instance_id", "at", "ok"))
        per_instance: dict[int, list] = {}
        for inst_id, at, _ok in rows:
            per_instance.setdefault(inst_id, []).append(at)
        gaps = sorted(max((b - a).total_seconds() for a, b in zip(ts, ts[1:], strict=False)) if len(ts) > 1
                      else float(SECONDS) for ts in (sorted(v) for v in per_instance.values()))
        window = (t1 - t0).total_seconds()
        expected_each = window / INTERVAL
        share = len(rows) / (ENDPOINTS * expected_each)
        fewest = min((len(v) for v in per_instance.values()), default=0) if len(per_instance) == ENDPOINTS else 0
        failed = sum(1 for r in rows if not r[2])
        cost = max(0.0, loaded - idle)
        print("\n== cadence")
        print(f"endpoints: {ENDPOINTS} at a {INTERVAL:g} s interval for {window:.1f} s -> expected "
              f"{expected_each:.1f} probes each, {ENDPOINTS * expected_each:.0f} in all; stored {len(rows)} "
              f"= {share:.1%} (target ≥ 99 %: {'met' if share >= 0.99 else 'NOT met'}); fewest of one endpoint "
              f"{fewest}; failed probes: {failed}; endpoints probed: {len(per_instance)}")
        print(f"worst gap between two probes of one endpoint: median {statistics.median(gaps):.2f} s, "
              f"max {gaps[-1]:.2f} s" if gaps else "no probes stored")
        print(f"CPU, probe process idle (baseline): {idle:.1%} of one core")
        print(f"CPU, probing {ENDPOINTS} endpoints:  {loaded:.1%} of one core")
        print(f"probing cost above the baseline: {cost:.1%} of one core (target ≤ 25 %: "
              f"{'met' if cost <= 0.25 else 'NOT met'}); {cost / max(len(rows) / window, 1e-9) * 1000:.2f} ms CPU "
              f"per probe")
        print(f"RSS of the probe process: {rss_start:.1f} MB after the warm-up, {rss_end:.1f} MB at the end "
              f"({rss_end - rss_start:+.1f} MB over {len(rows)} probes)")
        kuma = ENDPOINTS / 20
        rate = len(rows) / window
        print(f"anchor: at Uptime Kuma's 20 s minimum interval the same {ENDPOINTS} endpoints get {kuma:.0f} checks/s; "
              f"here {rate:.0f}/s, {rate / kuma:.1f}x as fresh")

        # --- detection ---------------------------------------------------------------------------
        fleet_pid = fleet.pid
        os.killpg(fleet_pid, signal.SIGKILL)
        fleet.wait()
        fleet = None
        Service.objects.filter(pk=bench.pk).update(desired_instances=0)
        Instance.objects.filter(service=bench).update(state=Instance.State.STOPPED)
        for p in procs:
            stop(p)
        # Detection needs the real controller (reconciler: kill -9) beside the probes (503), as `up`
        # runs them.
        procs = [start(env, *CONTROLLER), *(start(env, *argv) for argv in PROBING)]
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
