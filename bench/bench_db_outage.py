"""Recovery after a 20 s PostgreSQL outage, on a private instance (never the shared server).

A whole console (gunicorn with 2 workers, a qcluster, a controller) runs the demo fleet (4
instances over 3 services) on a PostgreSQL initdb'd in a temporary directory. Each round stops the
server (pg_ctl -m fast: every session terminated), kills -9 one instance of each service while it is
down (the deaths cannot be recorded until it is back), waits out the outage and starts it again,
then times from the moment the server accepts connections again:
- first 200: GET /mgmt/services answers 200 (during the outage it answers 503 database_unavailable);
- leading: the controller leads every loop again (its heartbeat rows name a leader since the return);
- converged: every service runs its desired count with none of the killed instances left running;
- workflow: a one-step workflow started at the first 200 has succeeded (the worker picks tasks up).

Run: .venv/bin/python bench/bench_db_outage.py  (root, PostgreSQL server binaries under
/usr/lib/postgresql). BENCH_ROUNDS (default 3), BENCH_OUTAGE_SECONDS (default 20). Prints figures;
asserts nothing.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.faults.outage_rig import Console, PrivatePostgres, converged, wait_until  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
OUTAGE = float(os.environ.get("BENCH_OUTAGE_SECONDS", "20"))


def running_refs(db: str) -> dict[int, int]:
    """Instance id → pid of one running instance per service."""
    with psycopg.connect(db, connect_timeout=3) as conn:
        rows = conn.execute("SELECT DISTINCT ON (service_id) id, ref FROM fleet_instance "
                            "WHERE state = 'running' AND ref ~ '^[0-9]+$' ORDER BY service_id, id").fetchall()
    return {iid: int(ref) for iid, ref in rows}


def healed(db: str, killed: set[int]) -> bool:
    try:
        with psycopg.connect(db, connect_timeout=3) as conn:
            left = conn.execute("SELECT count(*) FROM fleet_instance WHERE state = 'running' AND id = ANY(%s)",
                                [list(killed)]).fetchone()[0]
    except psycopg.Error:
        return False
    return left == 0 and converged(db)


def leading_since(db: str, back: datetime) -> bool:
    try:
        with psycopg.connect(db, connect_timeout=3) as conn:
            rows = conn.execute("SELECT since FROM controller_loopbeat WHERE leader").fetchall()
            # every loop any controller has a row for (so the figure follows new loops)
            (loops,) = conn.execute("SELECT count(DISTINCT loop) FROM controller_loopbeat").fetchone()
    except psycopg.Error:
        return False
    return len(rows) == loops and all(since and since > back for (since,) in rows)


def one_round(console: Console, pg: PrivatePostgres) -> dict[str, float]:
    db = pg.url
    wait_until(lambda: converged(db), 60, 0.2, "the fleet converged before the outage")
    victims = running_refs(db)
    pg.stop("fast")
    down = time.monotonic()
    for pid in victims.values():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    statuses = set()
    while time.monotonic() - down < OUTAGE:
        statuses.add(console.get("/mgmt/services").status_code)
        time.sleep(1)
    back = datetime.now(UTC)
    pg.start()
    up = time.monotonic()
    out: dict[str, float] = {}
    run_id = None
    pending = {"first 200", "leading", "converged", "workflow"}
    deadline = up + 120
    while pending and time.monotonic() < deadline:
        now = time.monotonic() - up
        if "first 200" in pending:
            try:
                if console.get("/mgmt/services").status_code == 200:
                    out["first 200"] = now
                    pending.discard("first 200")
                    r = console.post("/mgmt/workflows", {"flowId": "analyticsReport", "data": {"seconds": 0}})
                    run_id = r.json().get("runId")
            except requests.RequestException:
                pass
        if "leading" in pending and leading_since(db, back):
            out["leading"] = now
            pending.discard("leading")
        if "converged" in pending and healed(db, set(victims)):
            out["converged"] = now
            pending.discard("converged")
        if "workflow" in pending and run_id is not None:
            if console.get(f"/mgmt/workflows/{run_id}").json().get("status") == "succeeded":
                out["workflow"] = now
                pending.discard("workflow")
        time.sleep(0.02)
    print(f"  during the outage the API answered {sorted(statuses)}; after the return: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in out.items()) + (f"; never: {sorted(pending)}" if pending else ""))
    return out


def main() -> None:
    pg = PrivatePostgres()
    logdir = Path(tempfile.mkdtemp(prefix="hmsbench-outage-"))
    console = Console(pg.url, logdir, HMS_LOG_LEVEL="WARNING")
    try:
        pg.start()
        pg.create_database()
        console.prepare()
        console.start()
        print(f"database outage: {OUTAGE:.0f} s, {ROUNDS} rounds, one instance of each of 3 services killed "
              f"during each (logs in {logdir})")
        results = [one_round(console, pg) for _ in range(ROUNDS)]
        for key in ("first 200", "leading", "converged", "workflow"):
            values = [r[key] for r in results if key in r]
            if values:
                print(f"{key:>10}: median {statistics.median(values):.2f} s, max {max(values):.2f} s "
                      f"after the database's return ({len(values)}/{ROUNDS} rounds)")
        for name, proc in console.procs.items():
            print(f"{name:>10}: {'alive' if proc.alive else 'EXITED'}; 'database unavailable' logged "
                  f"{proc.output().count('database unavailable')}x, tracebacks {proc.output().count('Traceback')}")
    finally:
        console.stop()
        try:
            pg.start()
        except Exception:
            pass
        console.remove_instances()
        pg.destroy()


if __name__ == "__main__":
    main()
