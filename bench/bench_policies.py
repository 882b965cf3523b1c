"""What policy enforcement costs per request, under gunicorn (4 workers) on PostgreSQL, beside a
bare Django view doing one INSERT (same server, same database, same run):

  (a) bare view, 1 INSERT                                   the baseline
  (b) 429 refusal, 1 user   quota full: advisory lock + count + denied audit entry; every request
                            contends for the same (policy, user) lock
  (c) 429 refusal, 8 users  the same with 8 users round-robin: 8 lock keys
  (d) dry run, 1 user       POST /mgmt/workflows?dry_run=1: the decision only, no lock, no write

Prints req/s, p50/p99, each ratio to (a) and to (d). The rounds are interleaved and each case
keeps its best round, so load from elsewhere on the machine hurts every case alike. Targets: the
refusal's lock + count + audit write costs little beyond the decision itself, (b) >= 0.7x (d);
locks are per (policy, user), not global, so (c) >= (b).

Run: .venv/bin/python bench/bench_policies.py   (needs PostgreSQL on 127.0.0.1 and wrk)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Gunicorn, _ms, env_for, fresh_database, manage  # noqa: E402

SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
USERS = 8
SETUP = f"""
from django.contrib.auth.models import Group, User
from django.db import connection
from console.demo import load_demo
from fleet.models import Service
from workflows import actions
from workflows.models import WorkflowDefinition
load_demo("process")
Service.objects.update(desired_instances=0)
with connection.cursor() as c:
    c.execute("CREATE TABLE IF NOT EXISTS bench_bare (id bigserial primary key, created timestamptz, payload text)")
flow = WorkflowDefinition.objects.get(slug="analyticsReport")
for i in range({USERS}):
    u = User.objects.create_user(f"analyst{{i}}", password="bench-password-123")
    u.groups.add(Group.objects.get(name="analysts"))
    for _ in range(5):  # fill the quota: every later start is refused
        assert actions.start_run(flow, {{"seconds": 3600}}, actor=u).decision.allowed
"""


def wrk(url: str, body: str, tokens: list[str]) -> dict[str, float]:
    """wrk POSTing `body`, the bearer token rotating over `tokens` request by request."""
    lua = (f'wrk.method = "POST"\nwrk.body = [[{body}]]\nwrk.headers["Content-Type"] = "application/json"\n'
           f'local tokens = {{{", ".join(json.dumps(t) for t in tokens)}}}\nlocal i = 0\n'
           'request = function()\n  i = i + 1\n  if #tokens > 0 then\n'
           '    wrk.headers["Authorization"] = "Bearer " .. tokens[(i % #tokens) + 1]\n  end\n'
           '  return wrk.format()\nend\n')
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(lua)
    try:
        argv = ["wrk", "-t2", "-c8", f"-d{SECONDS}s", "--timeout", "10s", "--latency", "-s", fh.name, url]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(fh.name)
    if os.environ.get("BENCH_VERBOSE"):
        print(out)
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),
            "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),
            "requests": float(re.search(r"(\d+) requests in", out).group(1)),
            "non2xx": float(m.group(1)) if m else 0.0}


def main() -> None:
    db = fresh_database("hmsbench_policies")
    env = env_for(db, HMS_BENCH="1")
    manage(env, "migrate", "-v0")
    manage(env, "shell", "-c", SETUP)
    tokens = [manage(env, "create_api_token", f"analyst{i}") for i in range(USERS)]
    run = json.dumps({"flowId": "analyticsReport", "data": {"seconds": 3600}})
    cases = [
        ("(a) bare view, 1 INSERT", "/bench/bare-insert", json.dumps({"x": 1}), [], "all 2xx"),
        ("(b) 429 refusal, 1 user", "/mgmt/workflows", run, tokens[:1], "all 429"),
        (f"(c) 429 refusal, {USERS} users", "/mgmt/workflows", run, tokens, "all 429"),
        ("(d) dry run, 1 user", "/mgmt/workflows?dry_run=1", run, tokens[:1], "all 2xx"),
    ]
    server = Gunicorn(env, workers=4)
    results = {}
    try:
        # The workers import Django after the socket opens: wait until each of them can answer.
        for _ in range(8):
            requests.post(server.url + "/bench/bare-insert", json={"x": 1}, timeout=60).raise_for_status()
        for _name, path, body, toks, _ in cases:
            wrk(server.url + path, body, toks)  # warm-up
        for _ in range(ROUNDS):
            for name, path, body, toks, expect in cases:
                r = wrk(server.url + path, body, toks)
                refused = abs(r["non2xx"] - r["requests"]) <= 16  # a few may be in flight at the stop
                if (expect == "all 429") != refused or (expect == "all 2xx" and r["non2xx"]):
                    raise SystemExit(f"{name}: {int(r['non2xx'])} of {int(r['requests'])} non-2xx, expected {expect}")
                if name not in results or r["rps"] > results[name]["rps"]:
                    results[name] = r
    finally:
        server.stop()
    check = manage(env, "shell", "-c",
                   "from workflows.models import WorkflowRun; from audit.models import AuditEntry; "
                   "print(WorkflowRun.objects.count(), "
                   "AuditEntry.objects.filter(action='workflow.start', outcome='denied').count())")
    runs, denied = check.split()[-2:]
    base = results["(a) bare view, 1 INSERT"]["rps"]
    dry = results["(d) dry run, 1 user"]["rps"]
    print(f"\nPolicy enforcement — gunicorn 4 sync workers, PostgreSQL, wrk 2 threads × 8 connections, "
          f"best of {ROUNDS} × {SECONDS}s")
    print(f"{'case':28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs (a)':>7} {'vs (d)':>7}")
    for name, r in results.items():
        print(f"{name:28} {r['rps']:9.1f} {r['p50']:8.2f} {r['p99']:8.2f} "
              f"{r['rps'] / base:6.2f}x {r['rps'] / dry:6.2f}x")
    print(f"runs in the database: {runs} (= {USERS} users × 5: the quota held); denied starts audited: {denied}")
    print("targets: (b) >= 0.7x (d); (c) >= (b)")

if __name__ == "__main__":
    main()
