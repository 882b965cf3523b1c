"""Step re-delivery after kill -9 of its worker, on PostgreSQL.

A `manage.py controller --loops tick` (the lease sweep, every HMS_CONTROLLER_TICK_MS) and a
`manage.py qcluster` (2 workers) against a scratch database, with the shipped defaults (lease
HMS_STEP_LEASE_SECONDS=5, heartbeat every second, tick 500 ms). Each round starts a run of one
`sleep 30` step with `retries: 0`, waits until it is running and past a heartbeat, kills the
worker process holding it with SIGKILL (no clean-up: django-q2's sentinel starts a new worker), and
times:
- re-delivered: kill → the sweep has re-queued the step (redeliveries + 1, its attempt given back);
- running again: kill → a worker has claimed it again (claims + 1).
The run is then cancelled (the next round needs the worker). The lease lapses between 4 and 5 s
after the kill (the last heartbeat was at most 1 s before it), so the floor is ~4–5 s.

Anchors: Airflow's zombie-task detection (scheduler_zombie_task_threshold, default 300 s: a task
whose job has not heartbeated for 5 minutes is failed or retried, which spends a retry); Temporal's
activity heartbeat timeout (no default: set per activity; a worker that stops heartbeating has its
activity retried after that timeout, per its retry policy). Target: ours <= 6 s (lease + 1 s).

Run: .venv/bin/python bench/bench_redelivery.py  (needs PostgreSQL on 127.0.0.1). BENCH_ROUNDS
(default 10) sets the kills. Prints figures; asserts nothing.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import PY, ROOT, env_for, fresh_database, manage, wait  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))
AIRFLOW_ZOMBIE = 300.0  # scheduler_zombie_task_threshold default


def main() -> None:
    db = fresh_database("hmsbench_redelivery")
    env = env_for(db, HMS_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "ERROR"), HMS_Q_WORKERS="2")
    manage(env, "migrate", "-v0")
    os.environ.update({k: v for k, v in env.items() if k.startswith("HMS_") or k == "DATABASE_URL"})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hmsmgmt.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User

    from workflows import actions
    from workflows.models import StepRun, WorkflowDefinition

    user = User.objects.create_superuser("bench", "bench@example.org", "bench-pw-123")
    flow = actions.save_flow(WorkflowDefinition(slug="redeliver", name="redeliver", steps=[
        {"name": "work", "action": "sleep", "params": {"seconds": 30}, "retries": 0, "timeout": 60}]),
        actor="system:bench", created=True)
    logs = Path(tempfile.mkdtemp(prefix="hmsbench-redelivery-"))

    def start(cmd: str, *args: str) -> subprocess.Popen:
        with open(logs / f"{cmd}.log", "ab") as out:
            return subprocess.Popen([PY, str(ROOT / "manage.py"), cmd, *args], env=env, cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    procs = [start("controller", "--loops", "tick"), start("qcluster")]
    requeued: list[float] = []
    running: list[float] = []
    try:
        for n in range(1, ROUNDS + 1):
            run = actions.start_run(flow, {}, actor=user).run
            assert run is not None
            step = wait(lambda run=run: StepRun.objects.filter(run=run, status="running").first(), 60,
                        "the step to run", interval=0.02)
            time.sleep(1.2)  # past its first heartbeat: the lease is a renewed one, as mid-step
            pid = int(step.worker.rpartition(":")[2])
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            wait(lambda step=step: StepRun.objects.filter(pk=step.pk, redeliveries=1).exists(), 60,
                 "the re-delivery", interval=0.02)
            requeued.append(time.monotonic() - killed)
            wait(lambda step=step: StepRun.objects.filter(pk=step.pk, status="running", claims=2).exists(), 60,
                 "the step to run again", interval=0.02)
            running.append(time.monotonic() - killed)
            print(f"round {n:2d}: re-delivered {requeued[-1]:.2f} s, running again {running[-1]:.2f} s "
                  f"after the kill", flush=True)
            actions.cancel_run(run, actor=user)
            wait(lambda step=step: StepRun.objects.filter(pk=step.pk, error__startswith="stopped").exists(), 30,
                 "the cancelled step to stop")
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    lease = settings.HMS_STEP_LEASE_SECONDS
    tick = settings.HMS_CONTROLLER_TICK_MS
    p50, worst = statistics.median(running), max(running)
    print(f"\nstep re-delivery after kill -9 of its worker over {len(running)} kills (lease {lease} s, heartbeat "
          f"1 s, controller tick {tick} ms, retries 0; every step re-delivered without spending a retry):")
    print(f"  kill -> re-queued by the sweep: p50 {statistics.median(requeued):.2f} s, max {max(requeued):.2f} s")
    print(f"  kill -> running again:          p50 {p50:.2f} s, max {worst:.2f} s   [target <= {lease + 1} s: "
          f"{'MET' if worst <= lease + 1 else 'NOT MET'}]")
    print(f"Airflow zombie detection (scheduler_zombie_task_threshold default {AIRFLOW_ZOMBIE:.0f} s, and it spends "
          f"a retry): ratio p50 {p50 / AIRFLOW_ZOMBIE:.3f}x, max {worst / AIRFLOW_ZOMBIE:.3f}x")
    print("Temporal: an activity's heartbeat timeout has no default (set per activity); the retry after it "
          "counts against the activity's retry policy")


if __name__ == "__main__":
    main()
