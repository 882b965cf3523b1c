"""POST /mgmt/scale and POST /mgmt/workflows under gunicorn on PostgreSQL, beside a bare Django
view doing one INSERT (same server, same database, same run). Target: >= 0.75x the bare req/s.

A fourth line, "floor", is the least an audited scale must do through the same ORM (resolve the
token; update the count and insert the audit entry in one transaction): how far below the bare
view the work itself already is, before schema, permissions, policies and the answer.

Run: make bench  (or .venv/bin/python bench/bench_api.py). Needs PostgreSQL on 127.0.0.1 and wrk.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Gunicorn, env_for, fresh_database, manage, wrk_post  # noqa: E402

SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
SETUP = """
from django.db import connection
from console.demo import load_demo
from fleet.models import Service
load_demo("process")
Service.objects.update(desired_instances=0)
with connection.cursor() as c:
    c.execute("CREATE TABLE IF NOT EXISTS bench_bare (id bigserial primary key, created timestamptz, payload text)")
from django.contrib.auth.models import User
User.objects.create_superuser("bench", "", "bench-password-123")
"""


def main() -> None:
    db = fresh_database("hmsbench_api")
    env = env_for(db, HMS_BENCH="1")
    manage(env, "migrate", "-v0")
    manage(env, "shell", "-c", SETUP)
    token = manage(env, "create_api_token", "bench")
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    server = Gunicorn(env, workers=4)
    try:
        cases = [
            ("bare view, 1 INSERT", "/bench/bare-insert", json.dumps({"x": 1}), {"Content-Type": "application/json"}),
            ("floor: token+UPDATE+audit", "/bench/scale-floor",
             json.dumps({"service": "HMS-SVC", "instances": 0}), auth),
            ("POST /mgmt/scale", "/mgmt/scale", json.dumps({"service": "HMS-SVC", "instances": 0}), auth),
            ("POST /mgmt/workflows", "/mgmt/workflows",
             json.dumps({"flowId": "exportPatientData", "data": {"user": 123}}), auth),
        ]
        results = {}
        for name, path, body, headers in cases:
            wrk_post(server.url + path, body, headers, seconds=2)  # warm-up
            results[name] = r = wrk_post(server.url + path, body, headers, seconds=SECONDS)
            if r["non2xx"]:
                raise SystemExit(f"{name}: {int(r['non2xx'])} non-2xx responses — the bench is not measuring work")
    finally:
        server.stop()
    counts = manage(env, "shell", "-c",
                    "from audit.models import AuditEntry; from workflows.models import WorkflowRun; "
                    "from django.db import connection; c = connection.cursor(); "
                    "c.execute('select count(*) from bench_bare'); "
                    "print(c.fetchone()[0], AuditEntry.objects.filter(action='scale').count(), "
                    "WorkflowRun.objects.count())")
    base = results["bare view, 1 INSERT"]["rps"]
    print("\nREST API throughput — gunicorn 4 sync workers, PostgreSQL, "
          f"wrk 2 threads × 8 connections, {SECONDS}s")
    print(f"{'endpoint':28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'vs bare':>8}")
    for name, r in results.items():
        print(f"{name:28} {r['rps']:9.1f} {r['p50']:8.2f} {r['p99']:8.2f} {int(r['non2xx']):8d} "
              f"{r['rps'] / base:7.2f}x")
    bare_rows, scale_entries, runs = counts.split()[-3:]
    print(f"rows written: bare {bare_rows}, scale audit entries {scale_entries}, workflow runs {runs}")
    floor = results["floor: token+UPDATE+audit"]["rps"]
    for name in ("POST /mgmt/scale", "POST /mgmt/workflows"):
        print(f"{name}: {results[name]['rps'] / floor:.2f}x the floor")
    print("target: >= 0.75x the bare view's req/s")


if __name__ == "__main__":
    main()
