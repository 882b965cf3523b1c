"""GET /metrics: the fleet in Prometheus' text format (docs/observability.md lists every metric).

Every value is computed from the database when Prometheus scrapes, by one custom Collector
registered in a registry of its own. Nothing is counted in process memory, so the answer is the
same whichever gunicorn worker, or whichever web host, serves the scrape, and a restarted worker
loses nothing. That is why prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, files
merged per scrape) is not needed: it exists to add up counters that live in each worker's memory,
and there are none here. The default registry is left out for the same reason: its process and GC
figures would describe whichever worker happened to answer.

Counters are only what the database keeps monotonically:
- fail-overs and autoscaler scale calls are counted from the audit log, which is never deleted;
- restarts and instance starts from Instance rows, kept as long as their service;
- probe results, the probe latency histogram and the step duration histogram cover *the current
  UTC day* (probes: today's day roll-up, which health.rollups rebuilds as each minute closes, so
  it lags by up to a minute). They reset to zero at 00:00 UTC, which Prometheus' rate() and
  increase() handle as they handle a restarted process. A longer window cannot be a counter:
  roll-up tiers and raw results are pruned, and a counter that drops by a pruned day would read
  as a reset with a day's worth of false increase.

A scrape costs a fixed number of queries whatever the fleet size (grouped aggregates; the SLO
windows are one query each for every service: slo.sla.fleet_window_stats), counted by
tests/console/test_metrics.py at 3 and 30 services.

Access (`metrics_view`): a bearer token (HMS_METRICS_TOKEN) and/or peer addresses allowed without
one (HMS_METRICS_ALLOW). With neither, the endpoint refuses with a 403 saying how to enable it,
except on a development console (HMS_DEBUG=1), where settings default the allowlist to loopback.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, ExpressionWrapper, F, Min, OuterRef, Q, Subquery, Sum
from django.db.models.fields import DurationField
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_safe
from django_q.models import OrmQ
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from audit import events
from audit.models import AuditEntry
from autoscaling.models import AutoscaleDecision
from controller.loop import loop_periods
from controller.models import LoopBeat
from core.clientaddr import client_address
from core.http import json_error
from core.stats import LATENCY_BUCKETS_MS
from fleet.models import Instance, Service
from health import rollups
from health.models import ProbeRollup
from health.selectors import in_maintenance
from slo import sla
from slo.models import Incident
from workflows.models import StepRun, WorkflowRun

log = logging.getLogger(__name__)

# The SLO windows: the burn-rate alert pairs (5m/1h fast, 30m/6h slow) and the SLA page's 24h/30d.
SLO_WINDOWS = {"5m": 300, "30m": 1800, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "30d": 30 * 86400}
OBJECTIVES = (Incident.Kind.AVAILABILITY, Incident.Kind.LATENCY)
# Step durations span a 10 ms python call to an approval waiting for a person.
STEP_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# A loop beats at most once a second after a pass; a busy monitor or reconcile pass can take a few
# seconds on a large fleet. Older than FRESH: down; older than SHOWN: a dead process's leftover
# row, no longer reported at all.
BEAT_FRESH = timedelta(seconds=15)
BEAT_SHOWN = timedelta(minutes=5)
ACTIVE_STEP_STATES = (StepRun.Status.PENDING, StepRun.Status.QUEUED, StepRun.Status.RUNNING,
                      StepRun.Status.RETRYING, StepRun.Status.WAITING)
AUTOSCALER_ACTOR = "system:autoscaler"


def _day_start(now: datetime) -> datetime:
    return rollups.floor_to(now, rollups.DAY)


def _seconds(td: timedelta | None) -> float:
    return td.total_seconds() if td is not None else 0.0


def _cumulative(counts: Iterable[int], bounds: Iterable[float], total: int) -> list[tuple[str, float]]:
    """Per-bucket counts → Prometheus' cumulative buckets, +Inf last (it carries every sample)."""
    out, seen = [], 0
    for bound, count in zip(bounds, counts, strict=False):
        seen += count
        out.append((floatToGoString(bound), float(seen)))
    out.append(("+Inf", float(total)))
    return out


class FleetCollector(Collector):
    """Reads the fleet's figures at scrape time (see the module docstring for why)."""

    def describe(self) -> Iterable[Metric]:
        # Registering must not run the queries (describe() is what the registry calls at register
        # time when present); the names are not needed, nothing else is registered beside this.
        return []

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        services = list(
            Service.objects.select_related("objectives", "autoscale_settings").order_by("name").annotate(
                n_running=Count("instances", filter=Q(instances__state=Instance.State.RUNNING)),
                n_starting=Count("instances", filter=Q(instances__state=Instance.State.STARTING)),
                n_exited=Count("instances", filter=Q(instances__state=Instance.State.EXITED)),
                n_started=Count("instances"),
            )
        )
        names = {svc.pk: svc.name for svc in services}
        yield from self._fleet(services, now)
        yield from self._failovers(names)
        yield from self._probes(names, now)
        yield from self._slo(services, now)
        yield from self._incidents(names)
        yield from self._autoscaler(services, names)
        yield from self._workflows(now)
        yield from self._queue()
        yield from self._controller(now)
        yield from self._audit(now)

    # --- fleet ------------------------------------------------------------------------------------
    def _fleet(self, services: list[Any], now: datetime) -> Iterator[Metric]:
        instances = GaugeMetricFamily("hmsmgmt_service_instances",
                                      "Instances per service: desired count, running, starting",
                                      labels=["service", "state"])
        backoff = GaugeMetricFamily("hmsmgmt_service_backoff",
                                    "1 while crash-loop back-off holds the service's starts",
                                    labels=["service"])
        maint = GaugeMetricFamily("hmsmgmt_service_in_maintenance",
                                  "1 inside a maintenance window (probes excluded, fail-over and autoscaler paused)",
                                  labels=["service"])
        restarts = CounterMetricFamily("hmsmgmt_service_restarts",
                                       "Instances that died without being asked to (each one is replaced)",
                                       labels=["service"])
        starts = CounterMetricFamily("hmsmgmt_service_instance_starts",
                                     "Instances the console started for the service (replacements included)",
                                     labels=["service"])
        paused = in_maintenance([svc.pk for svc in services], now)
        for svc in services:
            instances.add_metric([svc.name, "desired"], svc.desired_instances)
            instances.add_metric([svc.name, "running"], svc.n_running)
            instances.add_metric([svc.name, "starting"], svc.n_starting)
            backoff.add_metric([svc.name], 1 if svc.backoff_until and svc.backoff_until > now else 0)
            maint.add_metric([svc.name], 1 if svc.pk in paused else 0)
            restarts.add_metric([svc.name], svc.n_exited)
            starts.add_metric([svc.name], svc.n_started)
        yield from (instances, backoff, maint, restarts, starts)

    def _failovers(self, names: dict[int, str]) -> Iterator[Metric]:
        """From the audit log (never deleted, so it only goes up): every fail-over is audited once,
        whoever caught it (the reconciler on a death, the probes on an unhealthy instance)."""
        counts = dict.fromkeys(names, 0)
        rows = (AuditEntry.objects.filter(action=events.FAILOVER, target_type__in=events.SERVICE_TARGET_TYPES)
                .order_by().values("target_id").annotate(n=Count("id")))
        for row in rows:
            try:
                svc_id = int(row["target_id"])
            except ValueError:
                continue
            if svc_id in counts:
                counts[svc_id] += row["n"]
        family = CounterMetricFamily("hmsmgmt_failovers", "Fail-overs of the service's instances (audited)",
                                     labels=["service"])
        for svc_id, name in names.items():
            family.add_metric([name], counts[svc_id])
        yield family

    # --- health -----------------------------------------------------------------------------------
    def _probes(self, names: dict[int, str], now: datetime) -> Iterator[Metric]:
        """Today's day roll-up per service: one row each (see the module docstring)."""
        probes = CounterMetricFamily("hmsmgmt_probes",
                                     "Probes since 00:00 UTC by result (up, down; excluded: inside maintenance)",
                                     labels=["service", "result"])
        slow = CounterMetricFamily("hmsmgmt_probes_slow",
                                   "Good probes slower than the latency objective, since 00:00 UTC",
                                   labels=["service"])
        latency = HistogramMetricFamily("hmsmgmt_probe_latency_seconds",
                                        "Latency of good probes since 00:00 UTC (no _sum: the roll-ups keep buckets)",
                                        labels=["service"])
        rows = {row["service_id"]: row for row in ProbeRollup.objects.filter(
            span=rollups.DAY, start=_day_start(now)).values("service_id", *rollups.COUNTS, "hist")}
        bounds = [ms / 1000 for ms in LATENCY_BUCKETS_MS]
        for svc_id, name in names.items():
            row = rows.get(svc_id) or dict.fromkeys(rollups.COUNTS, 0)
            for result in ("up", "down", "excluded"):
                probes.add_metric([name, result], row[result])
            slow.add_metric([name], row["slow"])
            # Every bucket on every series, zeros included: sum by (le) then lines up across services.
            hist = (list(row.get("hist") or []) + [0] * len(bounds))[:len(bounds)]
            latency.add_metric([name], _cumulative(hist, bounds, row["up"]), None)
        yield from (probes, slow, latency)

    # --- slo --------------------------------------------------------------------------------------
    def _slo(self, services: list[Any], now: datetime) -> Iterator[Metric]:
        uptime = GaugeMetricFamily("hmsmgmt_slo_uptime_ratio",
                                   "Good probes / probes over the window (absent without probes)",
                                   labels=["service", "window"])
        burn = GaugeMetricFamily("hmsmgmt_slo_burn_rate",
                                 "Bad fraction / error budget over the window (1 spends the budget exactly)",
                                 labels=["service", "objective", "window"])
        budget = GaugeMetricFamily("hmsmgmt_slo_error_budget_remaining_ratio",
                                   "Fraction of the 30-day error budget left (1 untouched, <= 0 spent)",
                                   labels=["service", "objective"])
        target_up = GaugeMetricFamily("hmsmgmt_slo_uptime_objective_ratio", "The availability objective",
                                      labels=["service"])
        target_lat = GaugeMetricFamily("hmsmgmt_slo_latency_objective_seconds", "The p95 latency objective",
                                       labels=["service"])
        ids = [svc.pk for svc in services]
        stats = {label: sla.fleet_window_stats(ids, secs, now=now) for label, secs in SLO_WINDOWS.items()}
        for svc in services:
            target_up.add_metric([svc.name], svc.objectives.uptime_objective / 100)
            target_lat.add_metric([svc.name], svc.objectives.latency_objective_ms / 1000)
            for label, by_service in stats.items():
                st = by_service[svc.pk]
                if not st.total:
                    continue
                uptime.add_metric([svc.name, label], st.up / st.total)
                for kind in OBJECTIVES:
                    burn.add_metric([svc.name, kind, label], sla.burn_rate(svc, st, kind))
            for kind in OBJECTIVES:
                left = sla.budget_remaining(svc, kind, stats=stats["30d"][svc.pk])
                if left is not None:
                    budget.add_metric([svc.name, kind], left)
        yield from (uptime, burn, budget, target_up, target_lat)

    def _incidents(self, names: dict[int, str]) -> Iterator[Metric]:
        counts = {(svc_id, sev): 0 for svc_id in names for sev in Incident.Severity.values}
        for row in (Incident.objects.filter(status__in=Incident.ACTIVE).order_by()
                    .values("service_id", "severity").annotate(n=Count("id"))):
            counts[(row["service_id"], row["severity"])] = row["n"]
        family = GaugeMetricFamily("hmsmgmt_incidents_open",
                                   "Incidents not resolved (open or acknowledged) by severity (page, ticket)",
                                   labels=["service", "severity"])
        for (svc_id, sev), n in counts.items():
            if svc_id in names:
                family.add_metric([names[svc_id], sev], n)
        yield family

    # --- autoscaling ------------------------------------------------------------------------------
    def _autoscaler(self, services: list[Any], names: dict[int, str]) -> Iterator[Metric]:
        """The latest decision per service (one query), and the scale calls the autoscaler made,
        from the audit log. Every decision is stored, "no change" included (one per service per
        period): counting them per scrape would scan the table for nothing the latest does not say."""
        enabled = GaugeMetricFamily("hmsmgmt_autoscaler_enabled", "1 when the autoscaler runs the service",
                                    labels=["service"])
        for svc in services:
            enabled.add_metric([svc.name], 1 if svc.autoscale_settings.autoscale_enabled else 0)
        latest = Subquery(AutoscaleDecision.objects.filter(service=OuterRef("pk")).order_by("-at", "-id")
                          .values("pk")[:1])
        decisions = AutoscaleDecision.objects.filter(
            pk__in=Service.objects.annotate(last=latest).filter(last__isnull=False).values("last")
        ).values("service_id", "at", "current", "raw", "desired", "applied")
        recommended = GaugeMetricFamily("hmsmgmt_autoscaler_recommended_instances",
                                        "What the latest decision wanted (after windows, rates and bounds)",
                                        labels=["service"])
        raw = GaugeMetricFamily("hmsmgmt_autoscaler_raw_recommendation",
                                "The latest decision's formula result, before windows, rates and bounds",
                                labels=["service"])
        last_at = GaugeMetricFamily("hmsmgmt_autoscaler_last_decision_timestamp_seconds",
                                    "When the latest decision was made (Unix time)", labels=["service"])
        last_applied = GaugeMetricFamily("hmsmgmt_autoscaler_last_decision_applied",
                                         "1 when the latest decision changed the desired count", labels=["service"])
        for row in decisions:
            name = names.get(row["service_id"])
            if name is None:
                continue
            recommended.add_metric([name], row["desired"])
            raw.add_metric([name], row["raw"])
            last_at.add_metric([name], row["at"].timestamp())
            last_applied.add_metric([name], 1 if row["applied"] else 0)
        scales = CounterMetricFamily("hmsmgmt_autoscaler_scales",
                                     "Scale calls the autoscaler made (audited): success applied, denied refused "
                                     "by a policy", labels=["service", "outcome"])
        counts = {(svc_id, out): 0 for svc_id in names for out in ("success", "denied")}
        for row in (AuditEntry.objects.filter(action=events.SCALE, actor=AUTOSCALER_ACTOR,
                                              target_type__in=events.SERVICE_TARGET_TYPES)
                    .order_by().values("target_id", "outcome").annotate(n=Count("id"))):
            try:
                key = (int(row["target_id"]), row["outcome"])
            except ValueError:
                continue
            if key in counts:
                counts[key] += row["n"]
        for (svc_id, out), n in counts.items():
            scales.add_metric([names[svc_id], out], n)
        yield from (enabled, recommended, raw, last_at, last_applied, scales)

    # --- workflows --------------------------------------------------------------------------------
    def _workflows(self, now: datetime) -> Iterator[Metric]:
        runs = GaugeMetricFamily("hmsmgmt_workflow_runs", "Workflow runs by flow and status (a retry moves a "
                                 "failed run back to running, so these are gauges)", labels=["flow", "status"])
        for row in WorkflowRun.objects.order_by().values("flow_slug", "status").annotate(n=Count("id")):
            runs.add_metric([row["flow_slug"], row["status"]], row["n"])
        steps = GaugeMetricFamily("hmsmgmt_workflow_steps", "Steps not finished, by status",
                                  labels=["status"])
        by_status = dict.fromkeys(ACTIVE_STEP_STATES, 0)
        for row in (StepRun.objects.filter(status__in=ACTIVE_STEP_STATES).order_by()
                    .values("status").annotate(n=Count("id"))):
            by_status[row["status"]] = row["n"]
        for status, n in by_status.items():
            steps.add_metric([status], n)
        busy = GaugeMetricFamily("hmsmgmt_workers_busy", "Workers busy: steps running under a lease",
                                 by_status[StepRun.Status.RUNNING])
        yield from (runs, steps, busy)
        yield self._step_durations(now)

    def _step_durations(self, now: datetime) -> Metric:
        took = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        buckets = {f"le{i}": Count("id", filter=Q(finished_at__lte=F("started_at") + timedelta(seconds=b)))
                   for i, b in enumerate(STEP_BUCKETS_S)}
        rows = (StepRun.objects.filter(finished_at__gte=_day_start(now), started_at__isnull=False)
                .order_by().values("run__flow_slug", "name")
                .annotate(n=Count("id"), total=Sum(took), **buckets))
        family = HistogramMetricFamily("hmsmgmt_workflow_step_duration_seconds",
                                       "Duration of the steps finished since 00:00 UTC, by flow and step",
                                       labels=["flow", "step"])
        for row in rows:
            # The bucket counts are already cumulative (each counts every step at or under its bound).
            cumulative = [(floatToGoString(b), float(row[f"le{i}"])) for i, b in enumerate(STEP_BUCKETS_S)]
            family.add_metric([row["run__flow_slug"], row["name"]], [*cumulative, ("+Inf", float(row["n"]))],
                              max(0.0, _seconds(row["total"])))
        return family

    def _queue(self) -> Iterator[Metric]:
        """Tasks waiting for a django-q2 worker. ORM broker: its table, counted as the broker's
        queue_size does (lock in the past: not claimed); Redis: the broker's own queue_size."""
        q = settings.Q_CLUSTER
        if "orm" in q:
            depth: int | None = OrmQ.objects.filter(key=q["name"], lock__lte=timezone.now()).count()
            broker = "orm"
        else:
            broker = "redis"
            try:
                depth = _redis_broker().queue_size()
            except Exception as exc:  # an unreachable Redis must not fail the whole scrape
                log.warning("metrics: cannot read the queue size from Redis: %s", exc)
                depth = None
        if depth is not None:
            yield _labelled_gauge("hmsmgmt_queue_depth", "Tasks waiting for a django-q2 worker",
                                  ["broker"], [broker], depth)

    # --- controller -------------------------------------------------------------------------------
    def _controller(self, now: datetime) -> Iterator[Metric]:
        labels = ["loop", "host", "pid"]
        up = GaugeMetricFamily("hmsmgmt_controller_loop_up",
                               f"1 when the loop beat within {BEAT_FRESH.seconds} s, 0 when it stopped beating "
                               f"(rows older than {BEAT_SHOWN.seconds // 60} min are left out)", labels=labels)
        took = GaugeMetricFamily("hmsmgmt_controller_pass_duration_seconds",
                                 "How long the loop's latest recorded pass took (a tick: one reconcile pass)",
                                 labels=labels)
        beat = GaugeMetricFamily("hmsmgmt_controller_last_beat_timestamp_seconds",
                                 "When the loop last recorded a pass (Unix time)", labels=labels)
        passes = CounterMetricFamily("hmsmgmt_controller_loop_passes",
                                     "Passes the loop made since its process started", labels=labels)
        leader = GaugeMetricFamily("hmsmgmt_controller_leader",
                                   "1 for the process leading the loop (its lease, controller/leader.py), 0 for a "
                                   "standby", labels=labels)
        running = GaugeMetricFamily("hmsmgmt_controller_loops_running",
                                    "Processes running the loop with a fresh beat (0: nobody runs it)",
                                    labels=["loop"])
        fresh = dict.fromkeys(loop_periods(), 0)
        for loop, host, pid, beat_at, pass_ms, n, leads in (
                LoopBeat.objects.filter(beat_at__gte=now - BEAT_SHOWN)
                .values_list("loop", "host", "pid", "beat_at", "last_pass_ms", "passes", "leader")):
            key = [loop, host, str(pid)]
            alive = now - beat_at <= BEAT_FRESH
            up.add_metric(key, 1 if alive else 0)
            took.add_metric(key, pass_ms / 1000)
            beat.add_metric(key, beat_at.timestamp())
            passes.add_metric(key, n)
            leader.add_metric(key, 1 if leads and alive else 0)
            fresh[loop] = fresh.get(loop, 0) + (1 if alive else 0)
        for loop, n in fresh.items():
            running.add_metric([loop], n)
        yield from (up, took, beat, passes, leader, running)

    # --- audit ------------------------------------------------------------------------------------
    def _audit(self, now: datetime) -> Iterator[Metric]:
        """Entries the sealer has not chained yet (the partial index audit_unsealed_idx: small)."""
        row = AuditEntry.objects.filter(seq__isnull=True).aggregate(n=Count("id"), oldest=Min("created_at"))
        yield GaugeMetricFamily("hmsmgmt_audit_pending_seal", "Audit entries waiting for the sealer", row["n"])
        age = max(0.0, (now - row["oldest"]).total_seconds()) if row["oldest"] else 0.0
        yield GaugeMetricFamily("hmsmgmt_audit_oldest_pending_seal_seconds",
                                "Age of the oldest entry waiting for the sealer (0 when none)", age)


def _labelled_gauge(name: str, doc: str, labels: list[str], values: list[str], value: float) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    family.add_metric(values, value)
    return family


_redis: Any = None


def _redis_broker() -> Any:
    """django-q2's Redis broker, built once per process (it holds a connection pool)."""
    global _redis
    if _redis is None:
        from django_q.brokers import get_broker  # imports the redis client: only with a Redis broker

        _redis = get_broker()
    return _redis


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(FleetCollector())


# --- access ------------------------------------------------------------------------------------------
def _bearer(request: HttpRequest) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def peer_allowed(addr: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """The client (REMOTE_ADDR; a forwarded header only through HMS_TRUSTED_PROXIES) is in an allowed
    network; an IPv4 peer seen through an IPv6 socket (::ffff:10.0.0.1) counts as itself."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the scrape may proceed, else the response refusing it."""
    token: str = settings.HMS_METRICS_TOKEN
    networks = settings.HMS_METRICS_ALLOW
    offered = _bearer(request)
    if token and offered is not None and hmac.compare_digest(offered.encode(), token.encode()):
        return None
    if peer_allowed(client_address(request), networks):
        return None
    if token:
        resp = json_error(401, "unauthorized", "GET /metrics needs `Authorization: Bearer <HMS_METRICS_TOKEN>`"
                          + (" (the token given is wrong)" if offered else "") + ".")
        resp["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return resp
    if networks:
        return json_error(403, "forbidden", "This address is not in HMS_METRICS_ALLOW.")
    return json_error(403, "metrics_disabled",
                      "Metrics are off: set HMS_METRICS_TOKEN (a bearer token Prometheus sends) and/or "
                      "HMS_METRICS_ALLOW (addresses or CIDRs allowed without one); see docs/observability.md.")


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    denied = refusal(request)
    if denied is not None:
        return denied
    resp = HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
    resp["Cache-Control"] = "no-store"
    return resp
