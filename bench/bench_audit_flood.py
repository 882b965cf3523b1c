"""A flood of refused requests against a real console (gunicorn on 127.0.0.1, a private PostgreSQL
database): how many audit entries it adds and how much the audit tables grow, per flood size, next to
what the naive approach (one entry per refusal) writes for the same flood, measured in the same run.

  (a) naive   one access.refused entry per refusal: the flood's own first entry copied N times into
              a scratch table shaped like audit_auditentry (same columns and indexes), measured, dropped
  (b) ours    audit.refusals: the first refusal per source, kind and minute is an entry, the rest
              count into a RefusalBucket row; closing the minute (the sealer's job, run here at once)
              writes one access.refused_repeated entry per bucket

Floods (BENCH_FLOOD_SIZES, default 1000,5000,10000): unauthenticated GET /mgmt/services (401),
half of them with a made-up bearer token; BENCH_FLOOD_HIDDEN=1 (default) adds as many 404-by-design
requests (a signed-in user with no rights asking for a service that exists: audited as denied).
Prints each flood's statuses and rate, entries added, table bytes grown, the ratio (b)/(a), and a
growth table across sizes. Target: 10,000 requests add at most a few dozen entries. No timed
assertions: the figures are the result.

Run: .venv/bin/python bench/bench_audit_flood.py   (PostgreSQL on 127.0.0.1; BENCH_PG_URL to change)
"""

from __future__ import annotations

import http.client
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Gunicorn, env_for, fresh_database, manage  # noqa: E402

SIZES = [int(n) for n in os.environ.get("BENCH_FLOOD_SIZES", "1000,5000,10000").split(",")]
HIDDEN = os.environ.get("BENCH_FLOOD_HIDDEN", "1") == "1"
CLIENTS = int(os.environ.get("BENCH_FLOOD_CLIENTS", "8"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "4"))
AUDIT_TABLES = ("audit_auditentry", "audit_refusalbucket")

SETUP = """
from django.contrib.auth.models import User
from accounts.actions import create_api_token
from fleet import actions
from fleet.models import Service
actions.save_service(Service(name="HMS-SVC", command="/bin/true"), actor="system:bench", created=True)
nobody = User.objects.create_user("dave", "dave@example.org", "pw-dave-123")
print(create_api_token(nobody, actor="system:bench")[1])
"""
CLOSE = """
from datetime import timedelta
from django.utils import timezone
from audit.refusals import close_buckets
print(close_buckets(now=timezone.now() + timedelta(minutes=2), limit=100000))
"""


def flood(port: int, n: int, requests: list[tuple[str, dict[str, str]]]) -> tuple[dict[int, int], float]:
    """n requests cycling through `requests`, over CLIENTS keep-alive connections."""
    statuses: dict[int, int] = {}

    def one_client(share: int, offset: int) -> dict[int, int]:
        seen: dict[int, int] = {}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(share):
            path, headers = requests[(offset + i) % len(requests)]
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            seen[status] = seen.get(status, 0) + 1
        conn.close()
        return seen

    shares = [n // CLIENTS + (1 if i < n % CLIENTS else 0) for i in range(CLIENTS)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        for seen in pool.map(one_client, shares, range(CLIENTS)):
            for status, count in seen.items():
                statuses[status] = statuses.get(status, 0) + count
    return statuses, time.perf_counter() - t0


def measure(conn: psycopg.Connection) -> tuple[int, int]:
    """(audit entries, bytes of the audit tables with their indexes and TOAST)."""
    conn.execute("VACUUM audit_refusalbucket")  # a bucket's updates leave dead versions until vacuumed
    entries = conn.execute("SELECT count(*) FROM audit_auditentry").fetchone()[0]
    size = sum(conn.execute("SELECT pg_total_relation_size(%s)", [t]).fetchone()[0] for t in AUDIT_TABLES)
    return entries, size


def naive_bytes(conn: psycopg.Connection, n: int) -> int:
    """Bytes of n copies of a real access.refused entry in a table shaped like the log (baseline)."""
    conn.execute("DROP TABLE IF EXISTS bench_naive")
    conn.execute("CREATE TABLE bench_naive (LIKE audit_auditentry INCLUDING DEFAULTS INCLUDING INDEXES)")
    cols = [r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'audit_auditentry' "
        "AND column_name NOT IN ('id', 'seq') ORDER BY ordinal_position")]
    listed = ", ".join(cols)
    conn.execute(f"INSERT INTO bench_naive (id, {listed}) SELECT g, {listed} FROM generate_series(1, %s) g, "
                 "(SELECT * FROM audit_auditentry WHERE action = 'access.refused' ORDER BY id LIMIT 1) e", [n])
    size = conn.execute("SELECT pg_total_relation_size('bench_naive')").fetchone()[0]
    conn.execute("DROP TABLE bench_naive")
    return size


def main() -> None:
    db = fresh_database("hmsbench_audit_flood")
    env = env_for(db)
    manage(env, "migrate", "-v0")
    token = manage(env, "shell", "-c", SETUP).splitlines()[-1]
    anon = [("/mgmt/services", {}), ("/mgmt/services", {"Authorization": "Bearer made-up-token-0123456789"})]
    hidden = [("/mgmt/services/HMS-SVC", {"Authorization": f"Bearer {token}"})]
    server = Gunicorn(env, workers=WORKERS, log=Path(env["HMS_VAR_DIR"]) / "gunicorn.log")
    rows = []
    try:
        with psycopg.connect(db, autocommit=True) as conn:
            for n in SIZES:
                for kind, reqs in (("401 unauthenticated", anon), ("404 hidden", hidden)):
                    if kind.startswith("404") and not HIDDEN:
                        continue
                    entries0, bytes0 = measure(conn)
                    statuses, took = flood(server.port, n, reqs)
                    closed = int(manage(env, "shell", "-c", CLOSE).splitlines()[-1])
                    entries1, bytes1 = measure(conn)
                    added, grown = entries1 - entries0, bytes1 - bytes0
                    naive = naive_bytes(conn, n)
                    refused = sum(c for s, c in statuses.items() if s in (401, 403, 404, 429))
                    print(f"{kind}: {n:,} requests in {took:.1f} s ({n / took:,.0f}/s), statuses "
                          f"{dict(sorted(statuses.items()))}")
                    print(f"  (b) ours:  {added} entries ({added - closed} first-of-minute + {closed} summaries), "
                          f"audit tables +{grown / 1024:,.0f} KiB")
                    print(f"  (a) naive: {refused:,} entries, {naive / 1024:,.0f} KiB   "
                          f"ratio (b)/(a): entries {added / max(refused, 1):.4f}x, bytes {grown / max(naive, 1):.4f}x")
                    rows.append((kind, n, n / took, added, refused, grown, naive))
    finally:
        server.stop()
    print("\ngrowth across sizes (entries and audit-table bytes added per flood; naive = one entry a refusal)")
    print(f"{'flood':<20} {'requests':>9} {'req/s':>7} {'entries':>8} {'naive':>8} {'KiB':>8} {'naive KiB':>10} "
          f"{'bytes ratio':>12}")
    for kind, n, rate, added, naive_n, grown, naive in rows:
        print(f"{kind:<20} {n:>9,} {rate:>7,.0f} {added:>8} {naive_n:>8,} {grown / 1024:>8,.0f} {naive / 1024:>10,.0f} "
              f"{grown / max(naive, 1):>11.4f}x")
    worst = max((r[3] for r in rows if r[1] == max(SIZES)), default=0)
    print(f"\ntarget: {max(SIZES):,} requests add at most a few dozen entries -> largest flood added {worst} "
          f"({'OK' if worst <= 48 else 'ABOVE TARGET'})")


if __name__ == "__main__":
    main()
