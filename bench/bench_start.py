"""The chapter's start call under sustained load, as in production (issue 18).

Everything runs as it does in production, on PostgreSQL, with HMS_DEBUG=0: gunicorn from
deploy/gunicorn.conf.py (4 workers), the controller (tick, monitor, sealer, failover) and the
probe loop, the django-q2 workers (2) and the alerts pool, and the demo fleet's process instances
(HMS-SVC ×2, HMS-API, analytics), so a started run's http steps succeed. Before the load,
`--active-runs` runs (10,000 by default) are bulk-inserted in states a busy console has: runs whose
first step is retrying with a long back-off, runs waiting for an approval, and as many finished ones.

Phases, each driven by wrk (2 threads, 8 connections) for `--seconds` (60 by default):
  1. bare:     POST /bench/bare-insert, a Django view doing one INSERT (console/bench_views.py): the
               machine's baseline in this same run;
  2. start:    POST /mgmt/workflows {"flowId": "exportPatientData", "data": {"user": 1}};
  3. scale:    POST /mgmt/scale re-asserting HMS-SVC's count, then changing a service's count
               (bench-scale, 0 ↔ 1 instances of a `sleep`, so every request converges on the engine);
  4. steps:    a burst of 3-step no-op runs (the 2 workers): steps/s, and dispatch latency over
               sequential runs (dependency finished → next step running).

For each load phase it prints req/s, p50/p99, the ratio to the bare view, requests per 10 s slice
(from the rows' timestamps: last slice vs first within 10 %?), and machine CPU per request split per
process kind (utime+stime from /proc of every process involved, children that exited included:
gunicorn, PostgreSQL backends of this database, workers, controller, probes, fleet, wrk).
CPU and query counts are the stable signals on a shared machine; req/s is not.

Run:  .venv/bin/python bench/bench_start.py [--seconds 60] [--quick] [--active-runs 10000]
      [--private-pg] (a private PostgreSQL with pg_stat_statements: top statements per phase)
      [--only bare,start,scale,steps]
Needs PostgreSQL on 127.0.0.1 (BENCH_PG_URL) and wrk. Database: bench_start (dropped and created).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PY, ROOT, env_for, free_port, fresh_database, manage, wrk_post  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.faults.outage_rig import PrivatePostgres  # noqa: E402

DB_NAME = "bench_start"
SETUP = """
from django.db import connection
from django.contrib.auth.models import User
from console.demo import load_demo
from fleet import actions as fleet_actions
from fleet.models import Service
from workflows import actions
from workflows.models import WorkflowDefinition

load_demo("process")
with connection.cursor() as c:
    c.execute("CREATE TABLE IF NOT EXISTS bench_bare (id bigserial primary key, created timestamptz, payload text)")
User.objects.create_superuser("bench", "", "bench-password-123")
User.objects.create_user("piled", "", "bench-password-123")
actions.save_flow(WorkflowDefinition(slug="noop3", name="3 noop steps", steps=[
    {"name": "a", "action": "noop"}, {"name": "b", "action": "noop", "depends_on": ["a"]},
    {"name": "c", "action": "noop", "depends_on": ["b"]}]), actor="system:bench", created=True)
actions.save_flow(WorkflowDefinition(slug="signoff", name="approval", steps=[
    {"name": "ask", "action": "approval", "params": {"prompt": "ok?"}}]), actor="system:bench", created=True)
svc = Service(name="bench-scale", driver="process", command="sleep 600", port=8080, health_path="")
fleet_actions.save_service(svc, actor="system:bench", created=True)
"""


# --- pre-inserted work -------------------------------------------------------------------------
PILE_SQL = """
WITH flow AS (SELECT id, slug FROM workflows_workflowdefinition WHERE slug = %(flow)s),
     who AS (SELECT id FROM auth_user WHERE username = 'piled'),
     runs AS (
       INSERT INTO workflows_workflowrun (definition_id, flow_slug, tag_list, data, actor_id, status, error,
                                          queue_key, created_at, started_at, finished_at)
       SELECT flow.id, flow.slug, %(tags)s::varchar, jsonb_build_object('user', g %% 500), who.id,
              %(run_status)s::varchar, '', '',
              now() - make_interval(secs => g), now() - make_interval(secs => g),
              CASE WHEN %(run_status)s::varchar = 'succeeded' THEN now() - make_interval(secs => g) + interval '2 s' END
       FROM generate_series(1, %(n)s) g, flow, who
       RETURNING id, created_at)
INSERT INTO workflows_steprun (run_id, name, action, params, depends_on, status, attempts, max_attempts,
                               redeliveries, claims, worker, retries, backoff_seconds, optional, trigger_rule,
                               approvers, allow_self_approval, timeout_seconds,
                               lease_until, not_before, output, error, queued_at, started_at, finished_at)
SELECT runs.id, s.name, s.action, s.params, s.depends_on, s.status, s.attempts, 3, 0, s.attempts, '', 2, 1.0,
       false, 'all_success', '{}'::jsonb, false, s.timeout, s.lease, s.not_before, s.output, s.error,
       runs.created_at, s.started, s.finished
FROM runs, LATERAL (VALUES %(steps)s) AS s(name, action, params, depends_on, status, attempts, timeout, lease,
                                             not_before, output, error, started, finished)
"""
SCALE_ROWS = ("SELECT extract(epoch FROM created_at) FROM audit_auditentry WHERE action = 'scale' AND target_id = "
              "(SELECT id::text FROM fleet_service WHERE name = 'NAME') AND created_at >= to_timestamp(%(t0)s) "
              "AND created_at < to_timestamp(%(t1)s)")
HTTP = "'{\"service\": \"HMS-SVC\", \"path\": \"/work\"}'::jsonb"


def pile_up(db_url: str, active: int) -> dict[str, int]:
    """Bulk-insert `active` active runs (60 % retrying with a long back-off, 40 % waiting for an
    approval) and as many finished ones. The back-off and the approval deadline lie past the
    bench, so they are work that accumulated, not work the workers do during it."""
    retrying = int(active * 0.6)
    shapes = [
        ("exportPatientData", ",export,", "running", retrying, [
            f"('collect', 'http', {HTTP}, '[]'::jsonb, 'retrying', 1, 10, NULL::timestamptz, "
            "now() + interval '2 hours', NULL::jsonb, 'HTTP 503 from HMS-SVC', runs.created_at, "
            "NULL::timestamptz)",
            f"('package', 'http', {HTTP}, '[\"collect\"]'::jsonb, 'pending', 0, 10, NULL, NULL, NULL, '', "
            "NULL, NULL)"]),
        ("signoff", "", "running", active - retrying, [
            "('ask', 'approval', '{}'::jsonb, '[]'::jsonb, 'waiting', 1, 86400, now() + interval '20 hours', "
            "NULL::timestamptz, '{\"prompt\": \"ok?\"}'::jsonb, '', runs.created_at, NULL::timestamptz)"]),
        ("exportPatientData", ",export,", "succeeded", active, [
            f"('collect', 'http', {HTTP}, '[]'::jsonb, 'succeeded', 1, 10, NULL::timestamptz, NULL::timestamptz, "
            "'{\"status\": 200}'::jsonb, '', runs.created_at, runs.created_at + interval '1 s')",
            f"('package', 'http', {HTTP}, '[\"collect\"]'::jsonb, 'succeeded', 1, 10, NULL, NULL, "
            "'{\"status\": 200}'::jsonb, '', runs.created_at, runs.created_at + interval '2 s')"]),
    ]
    with psycopg.connect(db_url, autocommit=True) as conn:
        for flow, tags, status, n, steps in shapes:
            if n:
                sql = PILE_SQL.replace("%(steps)s", ", ".join(steps))
                conn.execute(sql, {"flow": flow, "tags": tags, "run_status": status, "n": n})
        conn.execute("ANALYZE")
        return dict(conn.execute("SELECT status, count(*) FROM workflows_workflowrun GROUP BY status").fetchall())


# --- processes and their CPU ---------------------------------------------------------------------
TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime+stime+cutime+cstime in seconds) of one process: a live process's own CPU plus
    that of the children it has reaped, so summing over the live processes of a tree counts every
    process that ever ran in it exactly once."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(f[1]), (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / TICK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Machine:
    """Which process is which kind, and their CPU seconds."""

    def __init__(self, db_name: str, namespace: str, postmaster: int | None) -> None:
        self.roots: dict[str, list[int]] = {}
        self.db_name, self.namespace, self.postmaster = db_name, namespace, postmaster
        # Backends of this database by pid, with their last reading: one that ends (a connection
        # closed at CONN_MAX_AGE) keeps what it used instead of vanishing from the sum.
        self.backends: dict[int, float] = {}

    def add(self, kind: str, pid: int) -> None:
        self.roots.setdefault(kind, []).append(pid)

    def snapshot(self) -> dict[str, float]:
        stats: dict[int, tuple[int, float]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (st := _stat(int(entry))) is not None:
                stats[int(entry)] = st
        kids: dict[int, list[int]] = {}
        for pid, (ppid, _) in stats.items():
            kids.setdefault(ppid, []).append(pid)
        out: dict[str, float] = {}
        seen: set[int] = set()

        def tree(pid: int) -> float:
            if pid in seen or pid not in stats:
                return 0.0
            seen.add(pid)
            return stats[pid][1] + sum(tree(c) for c in kids.get(pid, []))

        marker = f"HMSMGMT_NAMESPACE={self.namespace}".encode()
        for pid in stats:  # the fleet first: instances may be children of the controller
            try:
                if marker in Path(f"/proc/{pid}/environ").read_bytes():
                    out["fleet"] = out.get("fleet", 0.0) + tree(pid)
            except OSError:
                continue
        for kind, pids in self.roots.items():
            out[kind] = out.get(kind, 0.0) + sum(tree(p) for p in pids)
        pg_ours, pg_other = 0.0, 0.0
        for pid, (ppid, cpu) in stats.items():
            if pid in seen:
                continue
            cmd = _cmdline(pid)
            if not cmd.startswith("postgres"):
                continue
            if f" {self.db_name} " in cmd:
                self.backends[pid] = cpu  # a backend of this database
            elif self.postmaster is not None and (pid == self.postmaster or ppid == self.postmaster):
                pg_other += cpu  # a private server: every process of it is ours (wal writer, ...)
            elif self.postmaster is None and " postgres " not in cmd and "@" not in cmd:
                pg_other += cpu  # the shared server's own processes (other sessions' load included)
        out["postgres"] = pg_ours + sum(self.backends.values())
        out["postgres-aux"] = pg_other
        return out


def start_proc(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_proc(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def kill_fleet(namespace: str) -> int:
    """SIGKILL the process group of every instance of this bench's console (its namespace marker)."""
    marker, killed = f"HMSMGMT_NAMESPACE={namespace}".encode(), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if marker in Path(f"/proc/{entry}/environ").read_bytes() and os.getpgid(int(entry)) == int(entry):
                os.killpg(int(entry), signal.SIGKILL)
                killed += 1
        except OSError:
            continue
    return killed


# --- load ---------------------------------------------------------------------------------------
def slices(conn: psycopg.Connection, sql: str, t0: float, seconds: int, width: int = 10) -> list[int]:
    """Rows per `width`-second slice from epoch t0, by the rows' own timestamps (sql: one column of
    epoch seconds, filtered to the phase)."""
    counts = [0] * max(1, seconds // width)
    for (at,) in conn.execute(sql, {"t0": t0, "t1": t0 + seconds}).fetchall():
        i = int((float(at) - t0) // width)
        if 0 <= i < len(counts):
            counts[i] += 1
    return counts


# --- the bench ----------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60, help="length of each load phase (default 60)")
    ap.add_argument("--quick", action="store_true", help="10 s phases, 2,000 active runs, a smaller burst")
    ap.add_argument("--active-runs", type=int, default=None, help="active runs inserted first (default 10000)")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--web-workers", type=int, default=4)
    ap.add_argument("--burst", type=int, default=None, help="3-step no-op runs in the steps/s burst (default 300)")
    ap.add_argument("--only", default="bare,start,scale,steps", help="phases to run (comma-separated)")
    ap.add_argument("--private-pg", action="store_true",
                    help="run a private PostgreSQL with pg_stat_statements and print its top statements")
    ap.add_argument("--redis", default="", help="HMS_REDIS_URL for the workers' broker (default: the ORM broker)")
    ap.add_argument("--json", default="", help="also write the figures to this file")
    args = ap.parse_args()
    # SIGTERM (timeout, kill) ends the bench through its finally: the console's processes, the
    # fleet and a private PostgreSQL are stopped rather than left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seconds = 10 if args.quick and args.seconds == 60 else args.seconds
    active = args.active_runs if args.active_runs is not None else (2000 if args.quick else 10000)
    burst = args.burst if args.burst is not None else (100 if args.quick else 300)
    phases = set(args.only.split(","))

    private = None
    if args.private_pg:
        # Only our processes in it, and pg_stat_statements for the statements of each phase.
        private = PrivatePostgres()
        private.start(fsync=True, extra="-c shared_preload_libraries=pg_stat_statements "
                                        "-c pg_stat_statements.track=all -c shared_buffers=256MB")
        admin_url = f"postgres://postgres@127.0.0.1:{private.port}/postgres"
        os.environ["BENCH_PG_URL"] = admin_url
        import common

        common.BASE_PG = admin_url
    procs: list[subprocess.Popen] = []
    namespace = ""
    figures: dict[str, Any] = {"seconds": seconds, "active_runs": active}
    try:
        db = fresh_database(DB_NAME)
        extra = {"HMS_BENCH": "1", "HMS_Q_WORKERS": "2", "WEB_CONCURRENCY": str(args.web_workers)}
        if args.redis:
            extra["HMS_REDIS_URL"] = args.redis
        env = env_for(db, **extra)
        logs = Path(env["HMS_VAR_DIR"])
        print(f"database {db}; logs in {logs}", flush=True)
        manage(env, "migrate", "-v0")
        manage(env, "shell", "-c", SETUP)
        token = manage(env, "create_api_token", "bench")
        namespace = manage(env, "shell", "-c", "from fleet.drivers.process import console_namespace; "
                                               "print(console_namespace())").split()[-1]
        piled = pile_up(db, active)
        print(f"runs in the database before the load: {piled}", flush=True)

        port = free_port()
        web_env = {**env, "HMS_PORT": str(port), "HMS_HOST": "127.0.0.1"}
        machine = Machine(DB_NAME, namespace, private.postmaster_pid() if private else None)
        web = start_proc([PY, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py")], web_env,
                         logs / "web.log")
        procs.append(web)
        machine.add("web", web.pid)
        for kind, argv, kenv in [
            ("controller", ["controller", "--loops", "tick,monitor,sealer,failover"], env),
            ("probes", ["controller", "--loops", "probes"], env),
            ("workers", ["qcluster"], env),
            ("alerts", ["qcluster"], {**env, "Q_CLUSTER_NAME": "alerts"}),
        ]:
            p = start_proc([PY, str(ROOT / "manage.py"), *argv], kenv, logs / f"{kind}.log")
            procs.append(p)
            machine.add(kind, p.pid)
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        conn = psycopg.connect(db, autocommit=True)
        if private is not None:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        _wait_ready(base, conn)

        def load(name: str, path: str, bodies: list[str], headers: dict[str, str], count_sql: str,
                 secs: int = seconds) -> dict[str, Any]:
            # warm-up
            wrk_post(base + path, bodies, headers, seconds=3, connections=args.connections, threads=args.threads)
            time.sleep(1)
            if private is not None:
                conn.execute("SELECT pg_stat_statements_reset()")
            cpu0, t0 = machine.snapshot(), time.time()
            r = wrk_post(base + path, bodies, headers, seconds=secs, connections=args.connections,
                         threads=args.threads)
            cpu1 = machine.snapshot()
            r["slices"] = slices(conn, count_sql, t0, secs)
            r["cpu_ms"] = {k: 1000 * (cpu1.get(k, 0) - cpu0.get(k, 0)) / max(1.0, r["requests"])
                           for k in sorted(set(cpu0) | set(cpu1))}
            r["wall"] = secs
            if r["non2xx"]:
                print(f"  !! {name}: {int(r['non2xx'])} non-2xx answers", flush=True)
            if private is not None:
                r["statements"] = top_statements(conn, r["requests"])
            figures[name] = r
            _print_phase(name, r, figures.get("bare"))
            return r

        if "bare" in phases:
            load("bare", "/bench/bare-insert", [json.dumps({"x": 1})], {"Content-Type": "application/json"},
                 "SELECT extract(epoch FROM created) FROM bench_bare WHERE created >= to_timestamp(%(t0)s) "
                 "AND created < to_timestamp(%(t1)s)")
        if "start" in phases:
            before = conn.execute("SELECT coalesce(max(id), 0) FROM workflows_workflowrun").fetchone()[0]
            t_start = time.time()
            r = load("start", "/mgmt/workflows", [json.dumps({"flowId": "exportPatientData", "data": {"user": 1}})],
                     auth, "SELECT extract(epoch FROM created_at) FROM workflows_workflowrun "
                           "WHERE created_at >= to_timestamp(%(t0)s) AND created_at < to_timestamp(%(t1)s)")
            done = _drain(conn, before, timeout=max(120, 3 * seconds))
            r["drain"] = done
            r["backlog_at_end"] = done["backlog_at_end"]
            print(f"  runs started in the phase: {done['started']}; still active when the load stopped: "
                  f"{done['backlog_at_end']}; all finished {done['drain_s']:.1f} s later "
                  f"({done['succeeded']} succeeded, {done['failed']} failed); "
                  f"http steps/s over the phase and the drain: {done['steps_per_s']:.1f} "
                  f"(the phase began {time.time() - t_start:.0f} s ago)", flush=True)
        if "scale" in phases:
            load("scale (re-assert)", "/mgmt/scale", [json.dumps({"service": "HMS-SVC", "instances": 2})], auth,
                 SCALE_ROWS.replace("NAME", "HMS-SVC"))
            load("scale (change)", "/mgmt/scale",
                 [json.dumps({"service": "bench-scale", "instances": n}) for n in (1, 0)], auth,
                 SCALE_ROWS.replace("NAME", "bench-scale"))
        if "steps" in phases:
            figures["steps"] = steps_phase(base, auth, conn, machine, burst)
    finally:
        for proc in reversed(procs):
            stop_proc(proc)
        if namespace:
            kill_fleet(namespace)
        if private is not None:
            private.destroy()
    _summary(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str))


def _wait_ready(base: str, conn: psycopg.Connection) -> None:
    import requests  # only here: the rest of the bench needs nothing but psycopg and wrk

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            up = requests.get(base + "/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            up = False
        running = conn.execute("SELECT count(*) FROM fleet_instance WHERE state = 'running'").fetchone()[0]
        workers = conn.execute("SELECT count(*) FROM console_workerbeat").fetchone()[0]
        if up and running >= 4 and workers >= 1:
            time.sleep(3)  # the probe loop's first round, the controller's first passes
            return
        time.sleep(0.5)
    raise SystemExit("the console did not come up (web ready, 4 fleet instances running, workers beating)")


def _drain(conn: psycopg.Connection, after_id: int, timeout: float) -> dict[str, Any]:
    """Wait (bounded) until every run started after `after_id` has finished."""
    q = ("SELECT count(*) FILTER (WHERE status IN ('pending', 'running')), count(*) FILTER (WHERE status = "
         "'succeeded'), count(*) FILTER (WHERE status NOT IN ('pending', 'running', 'succeeded')), count(*) "
         "FROM workflows_workflowrun WHERE id > %s")
    active, *_ = conn.execute(q, [after_id]).fetchone()
    t0 = time.monotonic()
    backlog = active
    while active and time.monotonic() - t0 < timeout:
        time.sleep(0.5)
        active, *_ = conn.execute(q, [after_id]).fetchone()
    active, ok, failed, started = conn.execute(q, [after_id]).fetchone()
    span = conn.execute("SELECT extract(epoch FROM min(s.started_at)), extract(epoch FROM max(s.finished_at)), "
                        "count(*) FROM workflows_steprun s JOIN workflows_workflowrun r ON r.id = s.run_id "
                        "WHERE r.id > %s AND s.finished_at IS NOT NULL", [after_id]).fetchone()
    steps_s = span[2] / (float(span[1]) - float(span[0])) if span[2] else 0.0
    return {"backlog_at_end": backlog, "drain_s": time.monotonic() - t0, "succeeded": ok, "failed": failed,
            "started": started, "still_active": active, "steps_per_s": steps_s}


def steps_phase(base: str, auth: dict[str, str], conn: psycopg.Connection, machine: Machine,
                burst: int) -> dict[str, Any]:
    """3-step no-op runs on the 2 workers, started through the API: dispatch latency over
    sequential runs, then steps/s for a burst started as fast as one client can."""
    import requests

    session = requests.Session()
    session.headers.update(auth)

    def start() -> int:
        resp = session.post(base + "/mgmt/workflows", json={"flowId": "noop3", "data": {}}, timeout=30)
        resp.raise_for_status()
        return int(resp.json()["runId"])

    def finished(ids: list[int]) -> bool:
        n = conn.execute("SELECT count(*) FROM workflows_workflowrun WHERE id = ANY(%s) AND status = 'succeeded'",
                         [ids]).fetchone()[0]
        return n == len(ids)

    latencies: list[float] = []
    for _ in range(50):
        rid = start()
        deadline = time.monotonic() + 30
        while not finished([rid]) and time.monotonic() < deadline:
            time.sleep(0.01)
        rows = dict((n, (s, f)) for n, s, f in conn.execute(
            "SELECT name, started_at, finished_at FROM workflows_steprun WHERE run_id = %s", [rid]).fetchall())
        if all(rows.get(k) and rows[k][0] and rows[k][1] for k in "abc"):
            latencies += [(rows["b"][0] - rows["a"][1]).total_seconds(), (rows["c"][0] - rows["b"][1]).total_seconds()]
    cpu0 = machine.snapshot()
    t0 = time.time()
    ids = [start() for _ in range(burst)]
    launched = time.time() - t0
    deadline = time.monotonic() + 600
    while not finished(ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    cpu1 = machine.snapshot()
    first, last, n = conn.execute(
        "SELECT extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)), count(*) "
        "FROM workflows_steprun WHERE run_id = ANY(%s) AND status = 'succeeded'", [ids]).fetchone()
    out = {
        "dispatch_p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "dispatch_p95_ms": 1000 * sorted(latencies)[int(0.95 * (len(latencies) - 1))] if latencies else None,
        "steps": n, "launch_s": launched,
        "steps_per_s": n / (float(last) - t0), "steps_per_s_working": n / (float(last) - float(first)),
        "cpu_ms_per_step": {k: 1000 * (cpu1.get(k, 0) - cpu0.get(k, 0)) / max(1, n) for k in cpu1},
    }
    print(f"\n== steps: {burst} 3-step no-op runs, 2 workers")
    print(f"  dispatch latency (dependency finished → next step running), n={len(latencies)}: "
          f"p50 {out['dispatch_p50_ms']:.1f} ms, p95 {out['dispatch_p95_ms']:.1f} ms")
    print(f"  throughput: {n} steps in {float(last) - t0:.2f} s from the first start = {out['steps_per_s']:.1f} "
          f"steps/s (first step start → last step end: {out['steps_per_s_working']:.1f} steps/s; "
          f"starting the runs took {launched:.2f} s)  [goal ≥ 150; bench_dispatch.py's figure before: 46.5]")
    _print_cpu(out["cpu_ms_per_step"], "step")
    return out


def top_statements(conn: psycopg.Connection, requests: float, limit: int = 12) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT calls, total_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) "
        "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s) "
        "ORDER BY total_exec_time DESC LIMIT %s", [DB_NAME, limit]).fetchall()
    return [{"per_request": c / max(1.0, requests), "ms_per_request": t / max(1.0, requests), "query": q}
            for c, t, q in rows]


def _print_cpu(cpu: dict[str, float], per: str) -> None:
    total = sum(v for k, v in cpu.items() if k != "wrk")
    parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if v >= 0.005)
    print(f"  machine CPU per {per}: {total:.2f} ms ({parts})")


def _print_phase(name: str, r: dict[str, Any], bare: dict[str, Any] | None) -> None:
    ratio = f"  = {r['rps'] / bare['rps']:.2f}x the bare view" if bare and name != "bare" else ""
    print(f"\n== {name}: {r['rps']:.1f} req/s, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, "
          f"{int(r['requests'])} requests, {int(r['non2xx'])} non-2xx{ratio}", flush=True)
    s = r["slices"]
    drift = (s[-1] - s[0]) / s[0] * 100 if s and s[0] else 0.0
    print(f"  per 10 s slice: {' '.join(str(x) for x in s)}  (last vs first: {drift:+.1f} %"
          f"{', within 10 %' if abs(drift) <= 10 else ', NOT within 10 %'})")
    _print_cpu(r["cpu_ms"], "request")
    if bare and name != "bare":
        mine = sum(v for k, v in r["cpu_ms"].items() if k != "wrk")
        theirs = sum(v for k, v in bare["cpu_ms"].items() if k != "wrk")
        print(f"  CPU per request vs the bare view: {mine / theirs:.2f}x")
    for st in r.get("statements", []):
        print(f"    {st['per_request']:6.2f}/req {st['ms_per_request']:6.3f} ms/req  {st['query']}")


def _summary(f: dict[str, Any]) -> None:
    print("\n######## summary")
    bare = f.get("bare")
    for name in ("bare", "start", "scale (re-assert)", "scale (change)"):
        if name not in f:
            continue
        r = f[name]
        cpu = sum(v for k, v in r["cpu_ms"].items() if k != "wrk")
        ratio = f"{r['rps'] / bare['rps']:.2f}x" if bare else "-"
        print(f"{name:18} {r['rps']:8.1f} req/s  p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms  vs bare {ratio:>6}  "
              f"CPU/request {cpu:6.2f} ms  slices {r['slices']}")
    if "start" in f:
        r = f["start"]
        s0 = r["slices"][0]
        print(f"start goals: ≥ 160 req/s {'MET' if r['rps'] >= 160 else 'MISSED'}; p99 ≤ 100 ms "
              f"{'MET' if r['p99'] <= 100 else 'MISSED'}; last 10 s within 10 % of first "
              f"{'MET' if s0 and abs(r['slices'][-1] - s0) <= 0.1 * s0 else 'MISSED'}")
    if "steps" in f:
        s = f["steps"]
        print(f"steps: {s['steps_per_s']:.1f} steps/s (goal ≥ 150 {'MET' if s['steps_per_s'] >= 150 else 'MISSED'}), "
              f"dispatch p50 {s['dispatch_p50_ms']:.1f} ms")
    print(f"load average {os.getloadavg()[0]:.1f} (2 cores: figures from a busy machine are low)")


if __name__ == "__main__":
    main()
