"""Fleet scale: how the pages, the API, the controller tick and the probes grow with the number of
services (BENCH_SIZES, default 3,30,100,300) and the age of the console's history (BENCH_DAYS,
default 1,30,90 days), on PostgreSQL with production settings (HMS_DEBUG=0, gunicorn -w 2).

Every figure is printed in a growth table beside its ratio to the smallest cell of the same run
(3 services / 1 day at the defaults), with its goal and whether this run met it. Nothing is
asserted: a missed goal is a line in the output, not a failure.

Measured, per number of services N (ascending; services are added, never rebuilt):
1. `/sla/` (logged-in superuser, real sign-in form) — median of BENCH_REPEAT requests after
   warm-ups. Goal ≤ 300 ms at 100 services with 90 days.
2. `/services/<name>/sla/` [≤ 150 ms at 90 days] and `GET /mgmt/services/<name>/sla` with a Bearer
   token from `create_api_token` [≤ 50 ms at 90 days].
3. `/` and `GET /mgmt/services` [≤ 100 ms at 300 services], and the SQL queries each of the five
   requests makes, counted in-process (django.test.Client under CaptureQueriesContext against the
   bench database) [constant across sizes].
4. The controller tick: `fleet.jobs.Reconciler()` called in this process, median and p95 of
   BENCH_TICKS passes, with N process-driver services of which half run one instance and half
   are at 0 [≤ 250 ms at 300 services, linear growth]. The instances are `busybox httpd` serving
   a file named `health` (apt-get install busybox-static). They are brought up by the real
   reconcile (scale_service, then ticks), which also gives "N services converge from 0 to 1
   instance: seconds until all running".
5. Probes at a 1 s interval with N live instances: `manage.py controller --loops PROBE_LOOPS`
   against the bench database, every ProbeSettings.probe_interval_seconds = 1; over
   BENCH_PROBE_SECONDS the ProbeResult rows per instance vs expected (seconds / interval) [≥ 99 %]
   and that process's CPU as % of one core from /proc/<pid>/stat (utime+stime delta over wall
   time) [≤ 25 % at 300]. That loop probes in its own process (health/prober.py), so every
   probe's CPU is that process's.
6. Memory: RSS of the gunicorn workers before and after each page series, and of the probe
   process at the start and end of its window [flat: end ≤ 1.10 × start].

History (`build_history`): the roll-up table a console of that age holds, for every service, in
the tiered schema (health_proberollup: service_id, span 60/3600/86400, start, total, up, down,
slow, excluded, hist[20], p50_ms, p95_ms, max_ms; unique (service_id, span, start)). Retention as
a console keeps it: minute rows for the last 48 h, hour rows for the last 92 days, day rows for up
to 400 days, each clipped to the console's age. One INSERT … SELECT over generate_series per tier:
every minute holds 60 probes (1 probe/s); failures and slow probes are sprinkled deterministically
by minute number and service id (3 failed probes every 240 minutes, 20 every 4001 minutes, one
probe in the 300–400 ms bucket every 13 minutes), so a period's counts are closed-form sums
(floor divisions) over its minutes: a coarser row is exactly the sum of its finer ones (the bench
checks this for one service) without generating minute rows for 90 days. 300 services × 90 days
(≈1.5 M rows) load in seconds. Percentiles are plausible constants per service (coarse rows are
for bars and budgets; the latency chart reads minute rows).

Run: .venv/bin/python bench/bench_scale.py  (PostgreSQL on 127.0.0.1, busybox-static). Knobs:
BENCH_SIZES, BENCH_DAYS, BENCH_REPEAT (timed requests per figure, default 7), BENCH_TICKS (timed
reconcile passes, default 10), BENCH_PROBE_SECONDS (default 20), BENCH_QUICK=1 (sizes 3,30, days
1,30, fewer repeats: a short run).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from common import (  # noqa: E402
    PY,
    ROOT,
    Gunicorn,
    children,
    cpu_seconds,
    env_for,
    fresh_database,
    login,
    manage,
    rss_bytes,
)

QUICK = os.environ.get("BENCH_QUICK") == "1"
SIZES = sorted({int(x) for x in os.environ.get("BENCH_SIZES", "3,30" if QUICK else "3,30,100,300").split(",")})
DAYS = sorted({int(x) for x in os.environ.get("BENCH_DAYS", "1,30" if QUICK else "1,30,90").split(",")})
REPEAT = int(os.environ.get("BENCH_REPEAT", "3" if QUICK else "7"))
WARMUP = 3  # one per gunicorn worker at least, whichever accepts
WARM_BUDGET = 3.0  # seconds of warm-up per series at most (a slow page warms in one request)
SERIES_BUDGET = float(os.environ.get("BENCH_SERIES_BUDGET", "8" if QUICK else "15"))  # timed seconds per series
TICKS = int(os.environ.get("BENCH_TICKS", "5" if QUICK else "10"))
TICK_BUDGET = float(os.environ.get("BENCH_TICK_BUDGET", "60"))
PROBE_SECONDS = float(os.environ.get("BENCH_PROBE_SECONDS", "8" if QUICK else "20"))
# The probe loop, a process of its own as `manage.py up` runs it.
PROBE_LOOPS = "probes"
PROBE_INTERVAL = 1.0
LEAK_ROUNDS = int(os.environ.get("BENCH_LEAK_ROUNDS", "3" if QUICK else "10"))
WORKERS = 2
ROLLUP = "health_proberollup"
BENCH_USER, BENCH_PASSWORD = "bench", "bench-password-123"
MB = 1024 * 1024

# --- history -------------------------------------------------------------------------------------
TIERS = (("minute", 60, 48 * 3600), ("hour", 3600, 92 * 86400), ("day", 86400, 400 * 86400))


def _count(offset: str, every: int) -> str:
    """SQL: how many minute numbers k in [a, b) have (k + offset) divisible by `every` — a
    closed form, so an hour or a day row costs what a minute row costs."""
    return f"(((b - 1 + {offset}) / {every}) - ((a - 1 + {offset}) / {every}))"


TIER_SQL = f"""
INSERT INTO {{table}} (service_id, span, start, total, up, down, slow, excluded, hist, p50_ms, p95_ms, max_ms)
SELECT sid, %(span)s, to_timestamp(k0 * 60), 60 * n, 60 * n - down, down, slow, 0,
       jsonb_build_array(2 * n, 10 * n, 28 * n - slow - down, 12 * n, 4 * n, 2 * n, n, n, 0, 0,
                         slow, 0, 0, 0, 0, 0, 0, 0, 0, 0),
       18 + mod(sid, 7), 90 + mod(sid, 11), CASE WHEN slow > 0 THEN 350 ELSE 140 + mod(sid, 40) END
FROM (
    SELECT sid, k0, b - a AS n,
           3 * {_count("sid * 37", 240)} + 20 * {_count("sid * 101", 4001)} AS down,
           {_count("sid", 13)} AS slow
    FROM (
        SELECT s.id::bigint AS sid, k0, greatest(k0, %(lo)s::bigint) AS a,
               least(k0 + %(m)s::bigint, %(hi)s::bigint) AS b
        FROM fleet_service s CROSS JOIN generate_series(%(first)s::bigint, %(last)s::bigint, %(m)s::bigint) AS k0
    ) periods
) counts
WHERE n > 0
"""
# Per minute: buckets ≤5,≤10,≤25,≤50,≤75,≤100,≤150,≤200 ms hold 2,10,28,12,4,2,1,1 good probes (60);
# a failed probe comes out of the ≤25 ms bucket, a slow one moves from it to 300–400 ms (above the
# default 300 ms objective). The ≤25 ms bucket never goes negative (28 − 1 − 23 ≥ 0), so the sums
# stay linear and sum(hist) == up on every row.


def build_history(cur: Any, table: str, days: int, now: datetime) -> dict[str, int]:
    """Replace `table`'s rows with the roll-ups of a console `days` old at `now`: every tier, every
    service, each row clipped to [now − days, the current minute). Returns rows per tier."""
    hi = int(now.timestamp()) // 60  # the current minute is still open: not rolled up yet
    lo = hi - days * 1440
    cur.execute(f"TRUNCATE {table}")
    # The service ids come from fleet_service itself: the per-row foreign-key triggers would only
    # re-check that, at half the load's time (this session only; we connect as a superuser).
    cur.execute("SET session_replication_role = replica")
    rows = {}
    try:
        for tier, span, keep in TIERS:
            m = span // 60
            first = max(lo, hi - keep // 60) // m * m  # aligned to the minute / hour / UTC day
            last = (hi - 1) // m * m
            cur.execute(TIER_SQL.format(table=table), {"span": span, "lo": lo, "hi": hi, "m": m, "first": first,
                                                       "last": last})
            rows[tier] = cur.rowcount
    finally:
        cur.execute("RESET session_replication_role")
    cur.execute(f"ANALYZE {table}")
    return rows


def check_history(cur: Any, table: str, service_id: int) -> str:
    """Each coarser row is the sum of its finer ones (counts; hist sums to `up`), for one service."""
    problems = []
    for fine, coarse, unit in ((60, 3600, "hour"), (3600, 86400, "day")):
        cur.execute(f"""
            SELECT count(*) FROM (
                SELECT date_trunc('{unit}', start, 'UTC') AS p, sum(total) t, sum(up) u, sum(down) d, sum(slow) s
                FROM {table} WHERE service_id = %(s)s AND span = %(fine)s GROUP BY 1) f
            JOIN {table} c ON c.service_id = %(s)s AND c.span = %(coarse)s AND c.start = f.p
            WHERE f.p >= (SELECT min(start) FROM {table} WHERE service_id = %(s)s AND span = %(fine)s)
              AND (f.t, f.u, f.d, f.s) <> (c.total, c.up, c.down, c.slow)""",
                    {"s": service_id, "fine": fine, "coarse": coarse})
        if bad := cur.fetchone()[0]:
            problems.append(f"{bad} {unit} rows differ from the sum of their {fine} s rows")
    cur.execute(f"""SELECT count(*) FROM {table} WHERE service_id = %s AND (jsonb_array_length(hist) <> 20
                    OR (SELECT sum(v::int) FROM jsonb_array_elements_text(hist) v) <> up)""", [service_id])
    if bad := cur.fetchone()[0]:
        problems.append(f"{bad} rows whose hist does not have 20 buckets summing to up")
    return "; ".join(problems) or "ok (hour = Σ minutes, day = Σ hours, Σ hist = up)"


# --- HTTP ----------------------------------------------------------------------------------------
def median_ms(get: Callable[[], Any], warm: float | None) -> tuple[float, int]:
    """Median ms of up to REPEAT requests after warm-ups, within SERIES_BUDGET seconds: a page that
    takes seconds is timed fewer times (at least once) rather than stretching the run past its
    budget; `warm`: this page's median on the previous cell, if any (a page of seconds served by
    these workers just now measures its work, not a cold start: no warm-up). Raises
    RuntimeError on a non-200 or a dropped connection (a gunicorn worker timeout)."""
    import requests

    def one() -> float:
        t = time.perf_counter()
        try:
            resp = get()
        except requests.RequestException as exc:
            raise RuntimeError(f"{type(exc).__name__} after {time.perf_counter() - t:.1f} s") from exc
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}")
        return (time.perf_counter() - t) * 1000

    started = time.perf_counter()
    for _ in range(0 if warm is not None and warm > WARM_BUDGET * 1000 else WARMUP):
        one()
        if time.perf_counter() - started > WARM_BUDGET:
            break
    started = time.perf_counter()
    times: list[float] = []
    while len(times) < REPEAT and not (times and time.perf_counter() - started > SERIES_BUDGET):
        times.append(one())
    return statistics.median(times), len(times)


def workers_rss(server: Gunicorn) -> float:
    return sum(rss_bytes(p) for p in children(server.proc.pid)) / MB


# --- the fleet -----------------------------------------------------------------------------------
def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


class Fleet:
    """N process-driver services running busybox httpd, converged by the real Reconciler here."""

    def __init__(self) -> None:
        from fleet.jobs import Reconciler

        self.www = tempfile.mkdtemp(prefix="hmsbench-www-")
        Path(self.www, "health").write_text("ok\n")
        self.reconciler = Reconciler()
        self.refs: set[str] = set()  # every pid an instance ever had: the clean-up kills these only

    def ensure(self, n: int) -> list[Any]:
        """Services bench-000 … up to n, through the ORM one by one (the post_save signal creates
        their probe, SLO and autoscaler settings rows); probes every second."""
        from fleet.models import Service
        from health.models import ProbeSettings

        for i in range(Service.objects.count(), n):
            Service.objects.create(name=f"bench-{i:03d}", driver="process", health_path="/health",
                                   command=f"/bin/busybox httpd -f -p 127.0.0.1:{{port}} -h {self.www}")
        ProbeSettings.objects.update(probe_interval_seconds=PROBE_INTERVAL, probe_timeout_seconds=0.5)
        return list(Service.objects.order_by("name"))

    def scale(self, services: list[Any], count: Callable[[int], int]) -> float:
        """scale_service (policies, audit) for each; returns seconds spent."""
        from fleet import actions

        t = time.perf_counter()
        for i, svc in enumerate(services):
            svc.refresh_from_db()
            if svc.desired_instances != count(i):
                actions.scale_service(svc, count(i), actor="system:bench")
        return time.perf_counter() - t

    def converge(self, want_running: int, timeout: float = 300.0) -> tuple[float, int]:
        """Reconcile passes until exactly `want_running` instances run and none start or stop.
        Returns (seconds, passes)."""
        from fleet.models import Instance

        t = time.perf_counter()
        passes = 0
        while time.perf_counter() - t < timeout:
            self.reconciler()
            passes += 1
            self.remember()
            states = list(Instance.objects.filter(state__in=[*Instance.LIVE_STATES, Instance.State.STOPPING])
                          .values_list("state", flat=True))
            if states.count(Instance.State.RUNNING) == want_running and len(states) == want_running:
                return time.perf_counter() - t, passes
        raise SystemExit(f"fleet did not converge to {want_running} running instances in {timeout:.0f} s")

    def remember(self) -> None:
        from fleet.models import Instance

        self.refs.update(r for r in Instance.objects.exclude(ref="").values_list("ref", flat=True) if r.isdigit())

    def tick_passes(self) -> list[float]:
        self.reconciler()  # warm-up
        out: list[float] = []
        started = time.perf_counter()
        # At least 3 passes; no more than TICK_BUDGET seconds of them (a slow tick is timed fewer times).
        while len(out) < TICKS and not (len(out) >= 3 and time.perf_counter() - started > TICK_BUDGET):
            t = time.perf_counter()
            self.reconciler()
            out.append((time.perf_counter() - t) * 1000)
        return out

    def kill_leftovers(self) -> int:
        """SIGKILL the process group of every instance pid we saw that is still ours (the marker the
        process driver puts in its environment, and this console's namespace): by pid, nothing else."""
        from fleet.drivers.process import console_namespace

        namespace, killed = console_namespace(), 0
        for ref in self.refs:
            try:
                environ = Path(f"/proc/{ref}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"HMSMGMT_NAMESPACE={namespace}".encode() in environ:
                try:
                    os.killpg(int(ref), signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
        return killed


def probe_window(env: dict[str, str], live: int) -> dict[str, float]:
    """The probe loop alone against the bench database for PROBE_SECONDS (after its warm-up)."""
    from django.db.models import Count
    from django.utils import timezone

    from health.models import ProbeResult

    log = open(Path(env["HMS_VAR_DIR"]) / "probe-loop.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([PY, str(ROOT / "manage.py"), "controller", "--loops", PROBE_LOOPS],
                            env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        started = timezone.now()
        deadline = time.monotonic() + 60
        while (ProbeResult.objects.filter(at__gte=started).values("instance_id").distinct().count() < live
               and time.monotonic() < deadline):
            time.sleep(0.5)
            if proc.poll() is not None:
                raise SystemExit(f"the probe loop exited ({proc.returncode}); see {log.name}")
        time.sleep(2 * PROBE_INTERVAL)  # past the first burst: every instance on its cadence
        rss0, cpu0, t0, w0 = rss_bytes(proc.pid) / MB, cpu_seconds(proc.pid), timezone.now(), time.monotonic()
        time.sleep(PROBE_SECONDS)
        cpu1, w1, t1, rss1 = cpu_seconds(proc.pid), time.monotonic(), timezone.now(), rss_bytes(proc.pid) / MB
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    per = dict(ProbeResult.objects.filter(at__gte=t0, at__lt=t1).values_list("instance_id")
               .annotate(c=Count("id")).values_list("instance_id", "c"))
    window = (t1 - t0).total_seconds()
    expected = live * window / PROBE_INTERVAL
    return {"percent": 100.0 * sum(per.values()) / expected, "worst": 100.0 * min(per.values(), default=0) /
            (window / PROBE_INTERVAL), "cpu": 100.0 * (cpu1 - cpu0) / (w1 - w0), "rss0": rss0, "rss1": rss1}


# --- the growth tables ---------------------------------------------------------------------------
Cell = tuple[int, int | None]  # (services, days); days None: a figure that does not depend on history


def table(results: dict[Cell, float], title: str, fmt: str = "{:.1f}") -> None:
    if not results:
        print(f"\n{title}: no figures")
        return
    by_days = sorted({d for _, d in results}, key=lambda d: -1 if d is None else d)
    base_key = (min(n for n, _ in results), by_days[0])
    base = results.get(base_key) or None
    print(f"\n{title}   (ratio: × the {base_key[0]}-service{'' if base_key[1] is None else f' / {base_key[1]}-day'}"
          " figure of this run)")
    print("services " + "".join(f"{'any age' if d is None else f'{d} d':>20}" for d in by_days))
    for n in sorted({n for n, _ in results}):
        cells = []
        for d in by_days:
            v = results.get((n, d))
            cells.append(f"{'—':>20}" if v is None else
                         f"{fmt.format(v):>12} {(v / base if base else float('nan')):6.2f}×")
        print(f"{n:8d} " + "".join(cells))


def goal(text: str, value: float | None, ok: Callable[[float], bool], fmt: str = "{:.1f}") -> None:
    if value is None:
        print(f"goal {text}: not measured (that cell is not in this run)")
    else:
        print(f"goal {text}: {fmt.format(value)} — {'met' if ok(value) else 'NOT met'}")


def worst_at(results: dict[Cell, float], days: int | None) -> float | None:
    values = [v for (_, d), v in results.items() if d == days]
    return max(values) if values else None


def report(figs: dict[str, dict[Cell, float]], failed: dict[str, str], fewer: dict[str, list[str]],
           rss_first: float, rss_start: float, rss_end: float, history_table: str) -> None:
    def at(key: str, cell: Cell) -> float | None:
        return figs.get(key, {}).get(cell)

    def at_size(key: str, n: int) -> float | None:  # worst over ages
        return max((v for (s, _), v in figs.get(key, {}).items() if s == n), default=None)

    def notes(key: str) -> None:
        if key in fewer:
            print(f"(timed fewer than {TICKS if key == 'tick' else REPEAT} times to keep the run in budget: "
                  f"{', '.join(fewer[key])})")
        if key in failed:
            print(f"FAILED: {failed[key]} (larger cells not tried)")

    pages = (
        ("sla", "1. /sla/ page (logged-in superuser), median ms", "≤ 300 ms at 100 services, 90 days",
         at("sla", (100, 90)), 300),
        ("svc_sla", "2a. /services/<name>/sla/, median ms", "≤ 150 ms at 90 days (worst over sizes)",
         worst_at(figs.get("svc_sla", {}), 90), 150),
        ("api_sla", "2b. GET /mgmt/services/<name>/sla (Bearer token), median ms",
         "≤ 50 ms at 90 days (worst over sizes)", worst_at(figs.get("api_sla", {}), 90), 50),
        ("overview", "3a. / overview, median ms", "≤ 100 ms at 300 services (worst over ages)",
         at_size("overview", 300), 100),
        ("api_services", "3b. GET /mgmt/services, median ms", "≤ 100 ms at 300 services (worst over ages)",
         at_size("api_services", 300), 100),
    )
    for key, title, goal_text, value, limit in pages:
        table(figs.get(key, {}), title)
        notes(key)
        if value is None and key in failed:
            print(f"goal {goal_text}: NOT met (failed before that cell)")
        else:
            goal(goal_text, value, lambda v, lim=limit: v <= lim, "{:.1f} ms")
    for key, path in (("sla", "/sla/"), ("svc_sla", "/services/<name>/sla/"), ("api_sla", "/mgmt/services/<name>/sla"),
                      ("overview", "/"), ("api_services", "/mgmt/services")):
        counts = figs.get(f"q_{key}", {})
        table(counts, f"3c. SQL queries of {path} (in-process, youngest and oldest history)", "{:.0f}")
        spread = sorted(set(counts.values()))
        print(f"goal constant across sizes and ages: {', '.join(f'{v:.0f}' for v in spread)} — "
              f"{'met' if len(spread) == 1 else 'NOT met'}")

    table(figs["tick_p50"], "4a. controller tick (Reconciler pass, half the services with 1 live instance), median ms")
    goal("≤ 250 ms at 300 services", at("tick_p50", (300, None)), lambda v: v <= 250, "{:.1f} ms")
    notes("tick")
    table(figs["tick_p95"], "4b. controller tick, p95 ms")
    table(figs["tick_per_service"], "4c. controller tick per service, median ms / service", "{:.2f}")
    sized = [n for n in SIZES if n >= 30] or SIZES
    per = figs["tick_per_service"]
    goal(f"linear growth: per-service cost at {sized[-1]} ≤ 1.25 × at {sized[0]} services",
         per[(sized[-1], None)] / per[(sized[0], None)], lambda v: v <= 1.25, "{:.2f}×")
    table(figs["converge"], "4d. N services from 0 to 1 instance: seconds until all running (no goal)", "{:.2f}")

    table(figs["probe_pct"], f"5a. probes kept at {PROBE_INTERVAL:g} s with N live instances, % of expected")
    goal("≥ 99 % at 300 live instances", at("probe_pct", (300, None)), lambda v: v >= 99, "{:.1f} %")
    table(figs["probe_worst"], "5b. probes, the worst instance's % of expected")
    table(figs["probe_cpu"], f"5c. probe process (--loops {PROBE_LOOPS}) CPU, % of one core")
    goal("≤ 25 % at 300 live instances", at("probe_cpu", (300, None)), lambda v: v <= 25, "{:.1f} %")

    table(figs["rss_gunicorn"], "6a. gunicorn workers' RSS after each page series, MB (before the first: "
          f"{rss_first:.0f} MB; it follows the size of the pages, i.e. of the fleet: no goal)")
    goal(f"flat: after {LEAK_ROUNDS} more rounds of every page on the last cell ({rss_start:.0f} → {rss_end:.0f} MB) "
         "≤ 1.05 ×", rss_end / rss_start, lambda v: v <= 1.05, "{:.2f}×")
    table(figs["rss_probe_start"], "6b. probe process RSS at the start of its window, MB")
    table(figs["rss_probe_end"], "6c. probe process RSS at the end of its window, MB")
    drift = max(figs["rss_probe_end"][c] / figs["rss_probe_start"][c] for c in figs["rss_probe_end"])
    goal("flat: end ≤ 1.10 × start (worst size)", drift, lambda v: v <= 1.10, "{:.2f}×")

    table(figs["history_s"], f"history load into {history_table}, seconds (no goal)", "{:.2f}")
    table(figs["history_rows"], "history rows (all tiers)", "{:.0f}")


def main() -> None:
    t_start = time.monotonic()
    db = fresh_database("hmsbench_scale")
    env = env_for(db)
    manage(env, "migrate", "-v0")
    manage(env, "shell", "-c", "from django.contrib.auth.models import User; "
           f"User.objects.create_superuser('{BENCH_USER}', '', '{BENCH_PASSWORD}')")
    token = manage(env, "create_api_token", BENCH_USER).split()[-1]
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "hmsmgmt.settings"
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    history_table = ROLLUP
    print(f"fleet-scale benchmark: services {SIZES}, history {DAYS} days, {REPEAT} timed requests after {WARMUP} "
          f"warm-ups, {TICKS} timed ticks, probes {PROBE_SECONDS:g} s at {PROBE_INTERVAL:g} s; PostgreSQL, "
          f"gunicorn -w {WORKERS}, HMS_DEBUG=0, {os.cpu_count()} CPUs; probe loop: --loops {PROBE_LOOPS}")

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(User.objects.get(username=BENCH_USER))
    auth = {"Authorization": f"Bearer {token}"}
    # Its worker-timeout tracebacks (a page over 30 s) go to a file; the bench prints the failure.
    server = Gunicorn(env, workers=WORKERS, log=Path(env["HMS_VAR_DIR"]) / "gunicorn.log")
    fleet = Fleet()
    figs: dict[str, dict[Cell, float]] = {}
    served: dict[str, float] = {}  # page → its median on the latest cell
    failed: dict[str, str] = {}
    fewer: dict[str, list[str]] = {}

    def put(name: str, cell: Cell, value: float) -> None:
        figs.setdefault(name, {})[cell] = value

    try:
        session = login(server.url, BENCH_USER, BENCH_PASSWORD)
        rss_start = workers_rss(server)
        for n in SIZES:
            services = fleet.ensure(n)
            name = services[0].name
            # 4a. all N from 0 to 1 instance through the real reconcile
            scale_s = fleet.scale(services, lambda i: 1)
            secs, passes = fleet.converge(n)
            put("converge", (n, None), secs)
            print(f"[{time.monotonic() - t_start:5.0f} s] {n} services: scaled to 1 in {scale_s:.1f} s, all running "
                  f"after {secs:.1f} s ({passes} reconcile passes)", flush=True)
            pages = {
                "sla": (lambda: session.get(f"{server.url}/sla/", timeout=60), "/sla/"),
                "svc_sla": (lambda nm=name: session.get(f"{server.url}/services/{nm}/sla/", timeout=60),
                            f"/services/{name}/sla/"),
                "api_sla": (lambda nm=name: session.get(f"{server.url}/mgmt/services/{nm}/sla", headers=auth,
                                                        timeout=60), f"/mgmt/services/{name}/sla"),
                "overview": (lambda: session.get(f"{server.url}/", timeout=60), "/"),
                "api_services": (lambda: session.get(f"{server.url}/mgmt/services", headers=auth, timeout=60),
                                 "/mgmt/services"),
            }
            in_process = {"sla": "/sla/", "svc_sla": f"/services/{name}/sla/", "overview": "/",
                          "api_sla": f"/mgmt/services/{name}/sla", "api_services": "/mgmt/services"}
            for days in DAYS:
                t = time.perf_counter()
                with connection.cursor() as cur:
                    rows = build_history(cur, history_table, days, timezone.now())
                    load_s = time.perf_counter() - t
                    if n == SIZES[0] and days == DAYS[-1]:
                        print(f"history check ({history_table}, {services[0].name}, {days} d): "
                              f"{check_history(cur, history_table, services[0].pk)}")
                put("history_s", (n, days), load_s)
                put("history_rows", (n, days), float(sum(rows.values())))
                before = workers_rss(server)
                for key, (get, what) in pages.items():
                    if key in failed:
                        continue  # it failed on a smaller cell: it would again, slower
                    try:
                        value, count = median_ms(get, warm=served.get(key))
                    except RuntimeError as exc:
                        failed[key] = f"{what} failed at {n} services, {days} d: {exc}"
                        print(failed[key], flush=True)
                        continue
                    put(key, (n, days), value)
                    served[key] = value
                    if count < REPEAT:
                        fewer.setdefault(key, []).append(f"{n}×{days} d: {count}")
                put("rss_gunicorn", (n, days), workers_rss(server))
                for key, path in in_process.items():
                    if days not in (DAYS[0], DAYS[-1]):
                        break  # constant across ages is checked between the youngest and the oldest
                    if key in failed:
                        continue
                    headers = {"HTTP_AUTHORIZATION": auth["Authorization"]} if path.startswith("/mgmt/") else {}
                    with CaptureQueriesContext(connection) as queries:
                        status = client.get(path, **headers).status_code
                    if status != 200:
                        raise SystemExit(f"in-process {path}: HTTP {status}")
                    put(f"q_{key}", (n, days), float(len(queries)))
                print(f"[{time.monotonic() - t_start:5.0f} s] {n} services, {days} d: history "
                      f"{sum(rows.values())} rows in {load_s:.1f} s; "
                      f"/sla/ {figs.get('sla', {}).get((n, days), float('nan')):.0f} ms; "
                      f"workers {before:.0f} → {figs['rss_gunicorn'][(n, days)]:.0f} MB", flush=True)
            # 5. probes with N live instances (the oldest history of the run in the table)
            pr = probe_window(env, n)
            put("probe_pct", (n, None), pr["percent"])
            put("probe_worst", (n, None), pr["worst"])
            put("probe_cpu", (n, None), pr["cpu"])
            put("rss_probe_start", (n, None), pr["rss0"])
            put("rss_probe_end", (n, None), pr["rss1"])
            print(f"[{time.monotonic() - t_start:5.0f} s] {n} live: probes {pr['percent']:.1f} % of expected, "
                  f"CPU {pr['cpu']:.1f} % of a core", flush=True)
            # 4b. half of them back to 0, then the tick with N/2 live instances
            fleet.scale(services, lambda i: i % 2)
            fleet.converge(sum(i % 2 for i in range(n)))
            ticks = fleet.tick_passes()
            put("tick_p50", (n, None), statistics.median(ticks))
            put("tick_p95", (n, None), p95(ticks))
            put("tick_per_service", (n, None), statistics.median(ticks) / n)
            if len(ticks) < TICKS:
                fewer.setdefault("tick", []).append(f"{n}: {len(ticks)}")
            fleet.scale(services, lambda i: 0)
            fleet.converge(0)
            print(f"[{time.monotonic() - t_start:5.0f} s] {n} services: tick median {statistics.median(ticks):.0f} "
                  f"ms; scaled back to 0", flush=True)
        # 6a'. a leak shows as growth over repeated rounds of the same work, not as the larger
        # working set of a larger fleet: every page again, LEAK_ROUNDS times, on the last cell.
        rss_settled = workers_rss(server)
        for _ in range(LEAK_ROUNDS):
            for get, _what in pages.values():
                get()
        rss_end = workers_rss(server)
    finally:
        server.stop()
        try:
            from fleet.models import Service

            fleet.scale(list(Service.objects.all()), lambda i: 0)
            fleet.converge(0, timeout=60)
        finally:
            if killed := fleet.kill_leftovers():
                print(f"killed {killed} leftover instance(s) by pid")

    print(f"\n===== growth tables ({time.monotonic() - t_start:.0f} s in all)")
    report(figs, failed, fewer, rss_start, rss_settled, rss_end, history_table)


if __name__ == "__main__":
    main()
