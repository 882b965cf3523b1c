"""Workflow step dispatch benchmark.

Measures, against a real `manage.py qcluster` with 2 workers on a scratch database:
  * dispatch latency: a step's dependency finished → the step running (StepRun.started_at minus the
    dependency's finished_at), p50/p95 over >= 200 transitions (3-step noop chains, one run at a time);
  * throughput: steps/s for a burst of 3-step noop runs;
  * the baseline, in the same run on the same cluster: django-q2's own bare enqueue → start and
    enqueue → result latency for a trivial task;
  * idle database load: transactions/s the idle cluster costs (PostgreSQL only).

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench .venv/bin/python bench/bench_dispatch.py [--runs 100]
(SQLite works too; figures there are not comparable.) Targets: p50 <= 50 ms, p95 <= 120 ms.
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
from common import wait  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hmsmgmt.settings")
os.environ.setdefault("HMS_DEBUG", "1")
os.environ["HMS_TEST_DB_SUFFIX"] = os.environ.get("HMS_TEST_DB_SUFFIX", "") + "bench"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(v: float) -> str:
    return f"{v * 1000:7.1f} ms"



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100, help="sequential 3-step runs (2 dispatches each)")
    parser.add_argument("--burst", type=int, default=100, help="runs launched at once for steps/s")
    parser.add_argument("--baseline", type=int, default=100, help="bare django-q2 tasks for the baseline")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    db_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    procs: list[subprocess.Popen] = []
    try:
        from django.contrib.auth.models import User
        from django_q.models import Task
        from django_q.tasks import async_task

        from audit import triggers
        from tests.conftest import database_url
        from workflows import actions
        from workflows.models import StepRun, WorkflowDefinition, WorkflowRun

        triggers.install(connection)
        logs = ROOT / "var"
        logs.mkdir(exist_ok=True)

        def start_cluster(tag: str, **extra: str) -> subprocess.Popen:
            env = {**os.environ, "DATABASE_URL": database_url(), "HMS_Q_WORKERS": "2", "PYTHONUNBUFFERED": "1",
                   **extra}
            env.pop("HMS_TESTING", None)
            log = open(logs / f"bench_dispatch.{tag}.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "qcluster"], env=env, cwd=ROOT,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(proc)
            async_task("math.floor", 1.0, task_name=f"warm-{tag}")
            wait(lambda: Task.objects.filter(name=f"warm-{tag}").exists(), 60, f"the {tag} cluster to start")
            return proc

        def stop_cluster(proc: subprocess.Popen) -> None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            procs.remove(proc)

        def bare_latency(tag: str, n: int) -> tuple[list[float], list[float]]:
            """django-q2 alone: enqueue -> the task running (time.time() is the task), -> result saved."""
            to_start, to_result = [], []
            for i in range(n):
                t0 = time.time()
                async_task("time.time", task_name=f"{tag}-{i}")
                task = wait(lambda i=i: Task.objects.filter(name=f"{tag}-{i}").first(), 30, "a baseline task")
                to_start.append(float(task.result) - t0)
                to_result.append(task.stopped.timestamp() - t0)
            return to_start, to_result

        def idle_load() -> float | None:
            if connection.vendor != "postgresql":
                return None

            def commits() -> int:
                with connection.cursor() as cur:
                    cur.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [db_name])
                    return int(cur.fetchone()[0])
            time.sleep(2)
            before, t = commits(), time.time()
            time.sleep(5)
            return (commits() - before - 1) / (time.time() - t)

        user = User.objects.create_superuser("bench", "bench@example.org", "bench-pw-123")
        flow = actions.save_flow(WorkflowDefinition(slug="noop3", name="3 noop steps", steps=[
            {"name": "a", "action": "noop"}, {"name": "b", "action": "noop", "depends_on": ["a"]},
            {"name": "c", "action": "noop", "depends_on": ["b"]}]), actor="system:bench", created=True)

        # --- baseline: stock django-q2 ORM broker (polling) ------------------------------------
        stock = start_cluster("stock", HMS_Q_NOTIFY="0")
        stock_start, stock_result = bare_latency("stock", args.baseline)
        stock_idle = idle_load()
        stop_cluster(stock)

        # --- the configured cluster ---------------------------------------------------------------
        start_cluster("hms")
        q_start, q_result = bare_latency("hms", args.baseline)
        latencies: list[float] = []
        for _ in range(args.runs):
            run = actions.start_run(flow, {}, actor=user).run
            wait(lambda run=run: WorkflowRun.objects.filter(pk=run.pk, status="succeeded").exists(), 30, "a run")
            steps = {s.name: s for s in StepRun.objects.filter(run=run)}
            latencies += [(steps["b"].started_at - steps["a"].finished_at).total_seconds(),
                          (steps["c"].started_at - steps["b"].finished_at).total_seconds()]
        t0 = time.time()
        burst = [actions.start_run(flow, {}, actor=user).run.pk for _ in range(args.burst)]
        launched = time.time() - t0
        wait(lambda: WorkflowRun.objects.filter(pk__in=burst, status="succeeded").count() == len(burst), 300,
             "the burst", interval=0.25)
        times = list(StepRun.objects.filter(run_id__in=burst).values_list("started_at", "finished_at"))
        elapsed = max(f for _, f in times).timestamp() - t0
        working = max(f for _, f in times).timestamp() - min(s for s, _ in times).timestamp()
        idle = idle_load()

        p50, p95 = statistics.median(latencies), pct(latencies, 95)
        s50 = statistics.median(stock_result)
        print(f"database: {connection.vendor}; 2 workers; poll {settings.Q_CLUSTER.get('poll')} s; "
              f"broker: {settings.Q_CLUSTER.get('broker_class', 'django-q2 ORM')}; load avg {os.getloadavg()[0]:.1f}")
        print(f"step dispatch latency (dependency finished -> next step running), n={len(latencies)}:")
        print(f"  p50 {ms(p50)}   p95 {ms(p95)}   max {ms(max(latencies))}   "
              f"[targets p50 <= 50 ms, p95 <= 120 ms: {'MET' if p50 <= 0.05 and p95 <= 0.12 else 'MISSED'}]")
        print(f"django-q2 bare task, stock ORM broker (same run), n={len(stock_start)}:")
        print(f"  enqueue -> running p50 {ms(statistics.median(stock_start))}   p95 {ms(pct(stock_start, 95))}")
        print(f"  enqueue -> result  p50 {ms(s50)}   p95 {ms(pct(stock_result, 95))}")
        print(f"django-q2 bare task, configured broker (same run), n={len(q_start)}:")
        print(f"  enqueue -> running p50 {ms(statistics.median(q_start))}   p95 {ms(pct(q_start, 95))}")
        print(f"  enqueue -> result  p50 {ms(statistics.median(q_result))}   p95 {ms(pct(q_result, 95))}")
        print(f"ratio: step dispatch p50 / stock django-q2 enqueue->result p50 = {p50 / s50:.2f} "
              f"(p95: {p95 / pct(stock_result, 95):.2f})")
        print(f"throughput: {3 * len(burst)} steps ({len(burst)} 3-step noop runs, launched at once) in "
              f"{elapsed:.2f} s = {3 * len(burst) / elapsed:.1f} steps/s (launching took {launched:.2f} s; "
              f"first step start to last step end {working:.2f} s = {3 * len(burst) / working:.1f} steps/s)")
        if idle is not None and stock_idle is not None:
            print(f"idle database load: {idle:.1f} transactions/s (stock ORM broker: {stock_idle:.1f}/s)")
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        from audit import triggers

        triggers.uninstall(connection)
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
