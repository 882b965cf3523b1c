"""Audit insert throughput with 1 and 8 concurrent writers (separate processes, like gunicorn
workers), same run, same PostgreSQL:

  (a) plain    one INSERT per transaction into the audit table, no chaining   (the baseline)
  (b) ours     audit.actions.record() in its transaction, with the sealer running beside it
  (c) chained  the previous design: chain-head advisory lock + head read + hash + INSERT

Prints entries/s, the ratio of (b) and (c) to (a) (target: (b) >= 0.5x (a) at 8 writers), the
sealing lag (sealed_at - created_at) p50/p95/max under the 8-writer load, and audit page query
times at BENCH_AUDIT_ROWS rows (keyset vs OFFSET, a filter, payload full text).

Run: .venv/bin/python bench/bench_audit.py   (needs PostgreSQL on 127.0.0.1; BENCH_PG_URL to change)
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import env_for, fresh_database  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
ROWS = int(os.environ.get("BENCH_AUDIT_ROWS", "1000000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
SEAL_INTERVAL = float(os.environ.get("HMS_AUDIT_SEAL_INTERVAL_MS", "100")) / 1000
WRITERS = (1, 8)


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hmsmgmt.settings")
    import django

    django.setup()


# --- writers (each in its own process) -----------------------------------------------------------
def _fields(mode: str, n: int) -> dict:
    from django.utils import timezone

    return {"created_at": timezone.now(), "actor": "bench", "actor_user_id": None, "action": f"bench.{mode}",
            "outcome": "success", "target_type": "services.service", "target_id": str(n % 7),
            "payload": {"from": n % 5, "to": n % 5 + 1, "reason": "bench"}, "ip": "127.0.0.1",
            "user_agent": "bench", "token_id": None, "request_id": f"req-{n}"}


def _writer(mode: str, seconds: float, start: mp.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    setup_django()
    from django.db import connection, transaction

    from audit.actions import record
    from audit.chain import GENESIS, entry_hash
    from audit.models import AuditEntry

    connection.ensure_connection()
    start.wait()
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if mode == "plain":
            with transaction.atomic():
                AuditEntry.objects.create(**_fields(mode, done))
        elif mode == "ours":
            with transaction.atomic():
                f = _fields(mode, done)
                record(f["action"], actor="bench", target_type=f["target_type"], target_id=f["target_id"],
                       payload=f["payload"])
        else:  # the previous design, for reference: every writer waits for the chain head
            with transaction.atomic():
                with connection.cursor() as cur:
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", [0x484D5341])
                head = (AuditEntry.objects.filter(seq__isnull=False).order_by("-seq")
                        .values_list("seq", "hash").first())
                seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
                f = {**_fields(mode, done), "seq": seq}
                AuditEntry.objects.create(prev_hash=prev, hash=entry_hash(prev, f), **f)
        done += 1
    out.put(done)
    connection.close()


def _sealer(stop: mp.Event) -> None:  # type: ignore[type-arg]
    setup_django()
    from audit.sealer import seal_pending

    while not stop.is_set():
        seal_pending()
        stop.wait(SEAL_INTERVAL)  # as the controller's sealer thread does


def run_phase(mode: str, writers: int) -> float:
    from django.db import connections

    from audit.sealer import seal_pending

    seal_pending()  # start every phase with an empty queue
    connections.close_all()  # never share a connection with forked children
    ctx = mp.get_context("fork")
    start, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    sealer = ctx.Process(target=_sealer, args=(stop,)) if mode == "ours" else None
    if sealer:
        sealer.start()
    procs = [ctx.Process(target=_writer, args=(mode, SECONDS, start, out)) for _ in range(writers)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let every writer connect before the clock starts
    began = time.monotonic()
    start.set()
    total = sum(out.get(timeout=SECONDS + 60) for _ in procs)
    elapsed = time.monotonic() - began
    for p in procs:
        p.join(30)
    if sealer:
        time.sleep(1.0)  # the tail of the run gets sealed too
        stop.set()
        sealer.join(30)
    return total / elapsed


def sealing_lag() -> dict[str, float]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("""SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), percentile_cont(0.95) WITHIN
                       GROUP (ORDER BY lag), max(lag), count(*), count(*) FILTER (WHERE sealed_at IS NULL)
                       FROM (SELECT extract(epoch FROM sealed_at - created_at) AS lag, sealed_at
                             FROM audit_auditentry WHERE action = 'bench.ours') t""")
        p50, p95, mx, n, unsealed = cur.fetchone()
    return {"p50": p50 * 1000, "p95": p95 * 1000, "max": mx * 1000, "n": n, "unsealed": unsealed}


# --- page queries at scale -------------------------------------------------------------------------
def fill(rows: int) -> None:
    """Bulk rows straight in SQL (sealed with placeholder hashes: this database is for timing only)."""
    from django.db import connection

    from audit.sealer import chain_head

    head, _ = chain_head()
    with connection.cursor() as cur:
        cur.execute("""INSERT INTO audit_auditentry (seq, created_at, actor, action, outcome, target_type, target_id,
                         target_repr, payload, ip, user_agent, request_id, prev_hash, hash, sealed_at)
                       SELECT %s + g, now() - make_interval(secs => %s - g), 'user' || (g %% 50),
                         (ARRAY['scale','policy.update','workflow.start','auth.login','service.update'])[1 + g %% 5],
                         CASE WHEN g %% 17 = 0 THEN 'denied' ELSE 'success' END, 'services.service', (g %% 300)::text,
                         'svc-' || (g %% 300), jsonb_build_object('from', g %% 9, 'to', g %% 9 + 1,
                         'note', 'entry number ' || g || CASE WHEN g %% 100000 = 7 THEN ' needle' ELSE '' END),
                         '127.0.0.1', 'bench', 'r' || g, repeat('0', 64), md5(g::text) || md5(g::text), now()
                       FROM generate_series(1, %s) AS g""", [head, rows, rows])
        cur.execute("ANALYZE audit_auditentry")


def timed(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    best = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best.append((time.perf_counter() - t) * 1000)
    return statistics.median(best)


def page_times() -> dict[str, float]:
    from audit import filters
    from audit.models import AuditEntry

    qs = AuditEntry.objects.all()
    total = qs.count()
    deep_id = qs.order_by("id").values_list("id", flat=True)[total // 2]

    def keyset(**params):  # type: ignore[no-untyped-def]
        return lambda: filters.page(qs, filters.parse(params))

    return {
        "first page": timed(keyset()),
        f"keyset page at row {total // 2:,}": timed(keyset(before=deep_id)),
        f"OFFSET page at row {total // 2:,} (for contrast)": timed(lambda: list(qs.order_by("-id")[total // 2:
                                                                                                  total // 2 + 50]),
                                                                   repeat=3),
        "actor filter": timed(keyset(actor="user7")),
        "action + outcome filter": timed(keyset(action="policy.update", outcome="denied")),
        "payload full text (rare word)": timed(keyset(q="needle")),
        "payload full text (word in every row)": timed(keyset(q="entry")),
    }


def main() -> None:
    db = fresh_database("hmsbench_audit")
    os.environ.update(env_for(db))
    setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    results: dict[tuple[str, int], float] = {}
    # Rounds alternate the three modes so a noisy neighbour on the machine hits all of them alike;
    # each figure is the best of its rounds.
    for _ in range(ROUNDS):
        for writers in WRITERS:
            for mode in ("plain", "ours", "chained"):
                rate = run_phase(mode, writers)
                results[(mode, writers)] = max(rate, results.get((mode, writers), 0.0))
    lag = sealing_lag()
    print(f"audit inserts, best of {ROUNDS} rounds of {SECONDS:g}s per phase, PostgreSQL, writers = processes")
    print(f"{'writers':>8} {'(a) plain/s':>12} {'(b) ours/s':>12} {'(c) chained/s':>14} {'b/a':>6} {'c/a':>6}")
    for writers in WRITERS:
        a, b, c = (results[(m, writers)] for m in ("plain", "ours", "chained"))
        print(f"{writers:>8} {a:>12.0f} {b:>12.0f} {c:>14.0f} {b / a:>6.2f} {c / a:>6.2f}")
    ratio = results[("ours", 8)] / results[("plain", 8)]
    print(f"ratio (b)/(a) at 8 writers: {ratio:.2f}x (target >= 0.5x) -> {'OK' if ratio >= 0.5 else 'BELOW TARGET'}")
    print(f"sealing lag (interval {SEAL_INTERVAL * 1000:.0f} ms, all 'ours' phases): p50 {lag['p50']:.0f} ms, "
          f"p95 {lag['p95']:.0f} ms, max {lag['max']:.0f} ms "
          f"over {lag['n']:.0f} entries ({lag['unsealed']:.0f} left unsealed)")
    if ROWS:
        started = time.monotonic()
        fill(ROWS)
        print(f"\naudit page queries with {ROWS:,} more rows (filled in {time.monotonic() - started:.0f}s), "
              "median ms:")
        for name, ms in page_times().items():
            print(f"  {name:<48} {ms:8.1f}")


if __name__ == "__main__":
    main()
