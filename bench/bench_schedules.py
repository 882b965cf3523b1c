"""Schedule fire lateness benchmark (issue 16).

Measures, against a real `manage.py controller --loops schedules` on a scratch database:
  * fire lateness: a schedule's scheduled instant -> its WorkflowRun created (run.created_at minus
    ScheduleFire.scheduled_for), p50/p95/max over >= 100 fires of one per-second schedule
    ("* * * * * *", overlap allow, so every second starts a run of its own);
  * growth: 1, 10 and 50 per-second schedules at once: lateness p50/p95/max and the controller's
    CPU per fire (utime + stime of the process over the window, divided by the fires);
  * the baseline, in the same run: the floor this design can reach (half a poll period,
    HMS_SCHEDULE_POLL_MS / 2, plus the start path itself, start_run timed here on the same
    database), and beside it Airflow's documented scheduler loop (scheduler_heartbeat_sec 5 s by
    default; out of the box a task waits ~1 s between dependencies, measured on this machine), a
    stated figure, not run here.

The runs need not progress for the figure (overlap allow: no fire waits for a run), so no workers
run by default: every run stays pending, its step in the broker. `--workers N` starts a qcluster of
N workers beside the controller (runs then finish; on 2 cores they compete with the controller).

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench .venv/bin/python bench/bench_schedules.py
       [--fires 100] [--seconds 25] [--sizes 1,10,50] [--workers 0]
(SQLite works too; figures there are not comparable.) Target: p95 <= 1 s. About 3 minutes.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import children, cpu_seconds, wait  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hmsmgmt.settings")
os.environ.setdefault("HMS_DEBUG", "1")
os.environ["HMS_TEST_DB_SUFFIX"] = os.environ.get("HMS_TEST_DB_SUFFIX", "") + "benchsched"

AIRFLOW_HEARTBEAT_S = 5.0  # scheduler_heartbeat_sec, Airflow's documented default
AIRFLOW_DEPENDENCY_S = 1.0  # a task's wait between dependencies out of the box, measured on this machine


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(v: float) -> str:
    return f"{v * 1000:7.1f} ms"


def tree_cpu(pid: int) -> float:
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            total += cpu_seconds(p)
        except OSError:
            continue  # gone meanwhile
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fires", type=int, default=100, help="fires of the single per-second schedule")
    parser.add_argument("--seconds", type=int, default=25, help="window of each larger size in the growth table")
    parser.add_argument("--sizes", default="1,10,50", help="per-second schedules at once, comma-separated")
    parser.add_argument("--workers", type=int, default=0, help="also run a qcluster of N workers (0: none)")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    procs: list[subprocess.Popen] = []
    try:
        from django.contrib.auth.models import User

        from audit import triggers
        from controller.models import LoopBeat
        from schedules import actions as schedule_actions
        from schedules.models import Schedule, ScheduleFire
        from tests.conftest import database_url
        from workflows import actions
        from workflows.models import WorkflowDefinition, WorkflowRun

        triggers.install(connection)
        logs = ROOT / "var"
        logs.mkdir(exist_ok=True)
        env = {**os.environ, "DATABASE_URL": database_url(), "PYTHONUNBUFFERED": "1", "HMS_LOG_LEVEL": "WARNING"}
        env.pop("HMS_TESTING", None)

        def spawn(tag: str, *argv: str, **extra: str) -> subprocess.Popen:
            log = open(logs / f"bench_schedules.{tag}.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), *argv], env={**env, **extra},
                                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(proc)
            return proc

        owner = User.objects.create_superuser("bench", "bench@example.org", "bench-pw-123")
        flow = actions.save_flow(WorkflowDefinition(slug="tick1", name="1 noop step", steps=[
            {"name": "a", "action": "noop"}]), actor="system:bench", created=True)

        # --- baseline, same run: the start path alone (what each fire does after its claim) ------
        starts = []
        for _ in range(50):
            t0 = time.perf_counter()
            actions.start_run(flow, {}, actor=owner)
            starts.append(time.perf_counter() - t0)
        WorkflowRun.objects.all().delete()
        start_p50, start_p95 = statistics.median(starts), pct(starts, 95)
        poll = settings.HMS_SCHEDULE_POLL_MS / 1000
        floor = poll / 2 + start_p50

        controller = spawn("controller", "controller", "--loops", "schedules")
        if args.workers:
            spawn("qcluster", "qcluster", HMS_Q_WORKERS=str(args.workers))
        wait(lambda: LoopBeat.objects.filter(pid=controller.pid, loop="schedules").exists(), 60,
             "the controller's schedules loop")
        time.sleep(2)  # past its start-up work
        c0, t0 = tree_cpu(controller.pid), time.monotonic()
        time.sleep(5)
        idle_cpu_s = (tree_cpu(controller.pid) - c0) / (time.monotonic() - t0)  # CPU-seconds per second

        def phase(n: int, window: float | None, fires_wanted: int | None) -> dict[str, float]:
            WorkflowRun.objects.all().delete()  # so the runs counted below are this phase's
            made = [schedule_actions.create_schedule(flow, {"name": f"s{n}-{i}", "cron": "* * * * * *",
                                                            "overlap_policy": "allow"},
                                                     owner=owner, actor=owner) for i in range(n)]
            ids = [s.pk for s in made]
            first = min(s.next_fire_at for s in made)
            wait(lambda: ScheduleFire.objects.filter(schedule_id__in=ids).exists(), 30, "a first fire")
            cpu0, m0 = tree_cpu(controller.pid), time.monotonic()
            f0 = ScheduleFire.objects.filter(schedule_id__in=ids).count()
            if fires_wanted is not None:
                wait(lambda: ScheduleFire.objects.filter(schedule_id__in=ids).count() >= f0 + fires_wanted,
                     fires_wanted * 3 + 30, f"{fires_wanted} fires", interval=0.5)
            else:
                time.sleep(window or 0)
            cpu1, m1 = tree_cpu(controller.pid), time.monotonic()
            f1 = ScheduleFire.objects.filter(schedule_id__in=ids).count()
            for s in made:
                schedule_actions.set_enabled(s, False, actor=owner)
            rows = list(ScheduleFire.objects.filter(schedule_id__in=ids, scheduled_for__gte=first)
                        .select_related("run").order_by("scheduled_for"))
            started = [f for f in rows if f.run is not None]
            late = [(f.run.created_at - f.scheduled_for).total_seconds() for f in started]
            early = sum(1 for x in late if x < 0)
            # Exactly once: one run per started fire, none without a fire (the unique constraint
            # already keeps one fire row per instant).
            extra_runs = WorkflowRun.objects.count() - len(started)
            return {"n": n, "fires": len(rows), "started": len(started), "other": len(rows) - len(started),
                    "early": early, "dupes": extra_runs,
                    "p50": statistics.median(late), "p95": pct(late, 95), "max": max(late),
                    "cpu_per_fire": (cpu1 - cpu0) / max(1, f1 - f0), "window": m1 - m0,
                    "outcomes": ", ".join(sorted({f"{f.outcome}" for f in rows})), "late_list": late}

        results = []
        for n in sizes:
            if n == 1:
                results.append(phase(1, None, args.fires))
            else:
                results.append(phase(n, args.seconds, None))
            Schedule.objects.all().delete()

        one = next((r for r in results if r["n"] == 1), results[0])
        p95 = one["p95"]
        print(f"database: {connection.vendor}; HMS_SCHEDULE_POLL_MS {settings.HMS_SCHEDULE_POLL_MS}; "
              f"grace {settings.HMS_SCHEDULE_GRACE_MS} ms; workers {args.workers}; 2 cores; "
              f"load avg {os.getloadavg()[0]:.1f} (1 min)")
        print(f"fire lateness (scheduled instant -> run created), 1 per-second schedule, n={one['started']} fires "
              f"(window {one['window']:.0f} s):")
        print(f"  p50 {ms(one['p50'])}   p95 {ms(p95)}   max {ms(one['max'])}   "
              f"[target p95 <= 1 s: {'MET' if p95 <= 1.0 else 'MISSED'}]")
        print(f"  fires not started: {one['other']}; runs beyond one per fire: {one['dupes']}; before their instant: "
              f"{one['early']}")
        print(f"baseline (same run): start_run alone p50 {ms(start_p50)}  p95 {ms(start_p95)} (n={len(starts)}); "
              f"floor = poll/2 + start p50 = {ms(floor)}")
        print(f"  ratio: lateness p50 / floor = {one['p50'] / floor:.2f}")
        print(f"Airflow (stated, not run here): scheduler_heartbeat_sec {AIRFLOW_HEARTBEAT_S:.0f} s default; "
              f"~{AIRFLOW_DEPENDENCY_S:.0f} s between dependencies measured on this machine")
        print(f"  ratio: lateness p95 / {AIRFLOW_HEARTBEAT_S:.0f} s = {p95 / AIRFLOW_HEARTBEAT_S:.3f}   "
              f"p95 / {AIRFLOW_DEPENDENCY_S:.0f} s = {p95 / AIRFLOW_DEPENDENCY_S:.3f}")
        print(f"controller idle (no schedule due): {idle_cpu_s * 1000:.1f} ms CPU per second")
        print("growth (per-second schedules at once):")
        print("  schedules   fires  started  extra  early   lateness p50     p95       max    CPU/fire   outcomes")
        for r in results:
            print(f"  {r['n']:9d} {r['fires']:7d} {r['started']:8d} {r['dupes']:6d} {r['early']:6d}  "
                  f"{ms(r['p50'])} {ms(r['p95'])} {ms(r['max'])} {r['cpu_per_fire'] * 1000:7.1f} ms   {r['outcomes']}")
        base = results[0]
        if len(results) > 1:
            print("  growth ratio vs the first size: " + ", ".join(
                f"{r['n']}: p95 x{r['p95'] / base['p95']:.2f}, CPU/fire x{r['cpu_per_fire'] / base['cpu_per_fire']:.2f}"
                for r in results[1:]))
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        from audit import triggers

        triggers.uninstall(connection)
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
