"""SLA: uptime and latency over rolling windows, error budgets, burn-rate alerts and the incidents
they open and resolve (alert delivery: slo.alerts).

Two objectives per service, both measured on probes (from the roll-ups: health.rollups reads a
window from the coarsest minute, hour and day rows that cover it):
- availability: a probe is bad when it failed; budget = 1 − uptime_objective (99.9 % → 0.1 %).
- latency: "p95 ≤ N ms" means at most 5 % of good probes may be slower than N; budget = 5 %.
Burn rate = bad fraction / budget (1× spends exactly the budget over the SLO period). Alerts follow
the multi-window, multi-burn-rate recipe of Google's SRE workbook, three window pairs
(slo.models.BURN_PAIRS): 1 h / 5 min at ≥ 14.4× (page), 6 h / 30 min at ≥ 6× (page) and
3 d / 6 h at ≥ 1× (ticket), each pair's factor and severity set per SLO (Objectives). A pair fires
when both its windows burn at least its factor. The short window makes an alert stop soon after
the problem does; the long one keeps a blip from paging. Probes inside a maintenance window are
left out of every figure.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from core.stats import LATENCY_BUCKETS_MS, hist_percentile, minute_floor
from fleet.models import Service
from health import rollups
from health.models import MaintenanceWindow, ProbeRollup
from health.selectors import in_maintenance as services_in_maintenance
from health.selectors import maintenance_window
from slo import actions
from slo.models import BURN_PAIRS, AlertDelivery, Incident, Objectives

log = logging.getLogger(__name__)

LATENCY_BUDGET = 0.05  # p95 objective: 5 % of probes may be slower
# Every window any pair reads: the same for every service (only factors and severities vary), so
# evaluate_all costs one grouped query per window whatever the fleet size.
BURN_WINDOWS = sorted({secs for _, _, long, short, _, _ in BURN_PAIRS for secs in (long, short)})
WINDOWS = {"1h": 3600, "24h": 86400, "30d": 30 * 86400}
MIN_PROBES = 3  # fewer probes than this in a short window prove nothing either way


# --- figures over a window -------------------------------------------------------------------------
@dataclass
class WindowStats:
    seconds: int
    total: int = 0
    up: int = 0
    down: int = 0
    slow: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None

    @property
    def uptime(self) -> float | None:
        return 100.0 * self.up / self.total if self.total else None

    def bad_fraction(self, kind: str) -> float:
        if kind == Incident.Kind.AVAILABILITY:
            return self.down / self.total if self.total else 0.0
        return self.slow / self.up if self.up else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uptime": self.uptime}


def window_stats(service: Service, seconds: int, *, now: datetime | None = None,
                 percentiles: bool = True) -> WindowStats:
    """Sum the roll-ups that make up the window (minute granularity, the current partial minute
    included; windows reaching back past the kept minutes start on the hour)."""
    return fleet_window_stats([service.pk], seconds, now=now, percentiles=percentiles)[service.pk]


def fleet_window_stats(service_ids: list[int], seconds: int, *, now: datetime | None = None,
                       percentiles: bool = False) -> dict[int, WindowStats]:
    """window_stats for many services in one query (two with percentiles), from the coarsest
    roll-ups that cover the window (health.rollups.segments)."""
    now = now or timezone.now()
    qs = ProbeRollup.objects.filter(rollups.window_filter(rollups.window_start(now, seconds), now),
                                    service_id__in=service_ids).order_by()
    out = {svc_id: WindowStats(seconds) for svc_id in service_ids}
    for row in qs.values("service_id").annotate(t=Sum("total"), u=Sum("up"), d=Sum("down"), s=Sum("slow")):
        stats = out[row["service_id"]]
        stats.total, stats.up, stats.down, stats.slow = row["t"] or 0, row["u"] or 0, row["d"] or 0, row["s"] or 0
    wanted = {i for i, st in out.items() if st.up} if percentiles and seconds <= 86400 else set()
    if wanted:
        merged = {i: [0] * (len(LATENCY_BUCKETS_MS) + 1) for i in wanted}
        for svc_id, hist in qs.filter(service_id__in=wanted).values_list("service_id", "hist"):
            for i, count in enumerate(hist or []):
                merged[svc_id][i] += count
        for svc_id, hist in merged.items():
            out[svc_id].p50_ms, out[svc_id].p95_ms = hist_percentile(hist, 0.50), hist_percentile(hist, 0.95)
    return out


def budget_fraction(service: Service, kind: str) -> float:
    if kind == Incident.Kind.AVAILABILITY:
        return max(1e-6, 1 - service.objectives.uptime_objective / 100)
    return LATENCY_BUDGET


def burn_rate(service: Service, stats: WindowStats, kind: str) -> float:
    return stats.bad_fraction(kind) / budget_fraction(service, kind)


def budget_remaining(service: Service, kind: str = Incident.Kind.AVAILABILITY, *,
                     stats: WindowStats | None = None) -> float | None:
    """Fraction of the 30-day error budget left (1.0 = untouched, ≤ 0 = spent)."""
    stats = stats or window_stats(service, WINDOWS["30d"], percentiles=False)
    if not stats.total:
        return None
    return 1 - stats.bad_fraction(kind) / budget_fraction(service, kind)


def in_maintenance(service: Service, at: datetime | None = None) -> MaintenanceWindow | None:
    return maintenance_window(service.pk, at)


@dataclass(frozen=True)
class Rule:
    """One window pair as a service's objectives set it."""

    name: str  # "1h/5m"
    long: int
    short: int
    factor: float
    severity: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "long": _label(self.long), "short": _label(self.short),
                "factor": self.factor, "severity": self.severity}


def rules_for(objectives: Objectives) -> list[Rule]:
    return [Rule(name, long, short, getattr(objectives, f"{prefix}_factor"), getattr(objectives, f"{prefix}_severity"))
            for name, prefix, long, short, _, _ in BURN_PAIRS]


SEVERITY_RANK = {Incident.Severity.PAGE: 0, Incident.Severity.TICKET: 1}


@dataclass
class Burn:
    kind: str
    alert: str | None  # the pair that decides: the most severe firing pair (shortest first), or None
    rates: dict[str, float]
    probes: dict[str, int]
    rule: Rule | None = None
    firing: list[str] = field(default_factory=list)  # every pair that fires

    @property
    def severity(self) -> str | None:
        return self.rule.severity if self.rule else None


def burn_state(service: Service, kind: str, *, now: datetime | None = None,
               cache: dict[int, WindowStats] | None = None) -> Burn:
    now = now or timezone.now()
    cache = {} if cache is None else cache
    rates: dict[str, float] = {}
    probes: dict[str, int] = {}
    firing: list[Rule] = []
    for rule in rules_for(service.objectives):
        for secs in (rule.long, rule.short):
            if secs not in cache:
                cache[secs] = window_stats(service, secs, now=now, percentiles=False)
            label = _label(secs)
            rates[label] = round(burn_rate(service, cache[secs], kind), 2)
            probes[label] = cache[secs].total
        short = cache[rule.short]
        enough = short.total >= MIN_PROBES and (kind == Incident.Kind.AVAILABILITY or short.up >= MIN_PROBES)
        if enough and rates[_label(rule.long)] >= rule.factor and rates[_label(rule.short)] >= rule.factor:
            firing.append(rule)
    # sorted() is stable: among pairs of one severity the shortest windows (listed first) decide.
    top = sorted(firing, key=lambda r: SEVERITY_RANK.get(r.severity, 9))[0] if firing else None
    return Burn(kind, top.name if top else None, rates, probes, top, [r.name for r in firing])


def _label(seconds: int) -> str:
    if seconds >= 2 * 86400 and seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    return f"{seconds // 3600}h" if seconds >= 3600 else f"{seconds // 60}m"


# --- incidents --------------------------------------------------------------------------------------
def evaluate_all(now: datetime | None = None) -> None:
    """Evaluate every service in a constant number of queries: each burn window is one grouped
    query for the fleet, the active incidents and maintenance windows one each; only an incident
    that opens, escalates or resolves costs more."""
    now = now or timezone.now()
    services = list(Service.objects.select_related("objectives"))
    ids = [svc.pk for svc in services]
    caches: dict[int, dict[int, WindowStats]] = {i: {} for i in ids}
    for secs in BURN_WINDOWS:
        for svc_id, stats in fleet_window_stats(ids, secs, now=now).items():
            caches[svc_id][secs] = stats
    active: dict[int, dict[str, Incident]] = {i: {} for i in ids}
    for inc in Incident.objects.filter(service_id__in=ids, status__in=Incident.ACTIVE).order_by("opened_at"):
        active[inc.service_id].setdefault(inc.kind, inc)
    paused = services_in_maintenance(ids, now)
    for svc in services:
        try:
            evaluate(svc, now=now, cache=caches[svc.pk], active=active[svc.pk], maintenance=svc.pk in paused)
        except Exception:
            log.exception("SLA evaluation of %s failed", svc.name)


def evaluate(service: Service, *, now: datetime | None = None, cache: dict[int, WindowStats] | None = None,
             active: dict[str, Incident] | None = None, maintenance: bool | None = None) -> dict[str, Burn]:
    """Open an incident per objective when a window pair fires (severity: the most severe firing
    pair's); escalate a ticket to a page when a page pair starts firing; resolve it once no pair
    fires. During maintenance nothing opens (those probes are excluded anyway). cache, active and
    maintenance: what evaluate_all read for the whole fleet (else read here)."""
    now = now or timezone.now()
    cache = {} if cache is None else cache
    if maintenance is None:
        maintenance = in_maintenance(service, now) is not None
    out: dict[str, Burn] = {}
    for kind in (Incident.Kind.AVAILABILITY, Incident.Kind.LATENCY):
        burn = burn_state(service, kind, now=now, cache=cache)
        out[kind] = burn
        current = active.get(kind) if active is not None else \
            Incident.objects.filter(service=service, kind=kind, status__in=Incident.ACTIVE).first()
        # "alert" names the pair that fired, "pair" its windows, factor and severity as configured
        # then (a later edit of the objectives does not rewrite what an incident says).
        evidence = {"burn_rates": burn.rates, "probes": burn.probes, "alert": burn.alert,
                    "pair": burn.rule.as_dict() if burn.rule else None, "firing": burn.firing,
                    "objective": _objective_text(service, kind)}
        if burn.rule and current is None and not maintenance:
            title = (f"{service.name}: {kind} budget burning ≥ {burn.rule.factor:g}× over {burn.rule.name} "
                     f"({_objective_text(service, kind)})")
            actions.open_incident(service, kind=kind, severity=burn.rule.severity, title=title, evidence=evidence)
        elif current is not None and burn.rule is None:
            actions.resolve_incident(current, evidence=evidence)
        elif current is not None and burn.rule is not None and burn.rule.severity == Incident.Severity.PAGE \
                and current.severity != Incident.Severity.PAGE:
            actions.escalate_incident(current, severity=Incident.Severity.PAGE, evidence=evidence)
    return out


def fast_burning(service: Service) -> bool:
    """Used by the autoscaler: an active incident at page severity on either objective (by default
    the 1 h / 5 min and 6 h / 30 min pairs page)."""
    return Incident.objects.filter(service=service, status__in=Incident.ACTIVE,
                                   severity=Incident.Severity.PAGE).exists()


def _objective_text(service: Service, kind: str) -> str:
    if kind == Incident.Kind.AVAILABILITY:
        return f"uptime ≥ {service.objectives.uptime_objective:g} %"
    return f"p95 ≤ {service.objectives.latency_objective_ms} ms"


# --- what the pages read ----------------------------------------------------------------------------
def summary(service: Service, *, now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    windows = {name: window_stats(service, secs, now=now, percentiles=secs <= 86400)
               for name, secs in WINDOWS.items()}
    return {
        "windows": windows,
        "budget": {kind: budget_remaining(service, kind, stats=windows["30d"])
                   for kind in (Incident.Kind.AVAILABILITY, Incident.Kind.LATENCY)},
        "maintenance": in_maintenance(service, now),
    }


def daily_uptime(service: Service, days: int = 90, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """One entry per day (oldest first): uptime percent or None when there were no probes."""
    now = now or timezone.now()
    start = rollups.floor_to(now - timedelta(days=days - 1), rollups.DAY)
    totals = rollups.period_totals([service.pk], rollups.DAY, start, now)[service.pk]
    return [_point(day.date().isoformat(), totals.get(day))
            for day in (start + timedelta(days=i) for i in range(days))]


def hourly_uptime(service: Service, hours: int = 24, *, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or timezone.now()
    return fleet_hourly_uptime([service.pk], hours, now=now)[service.pk]


def fleet_hourly_uptime(service_ids: list[int], hours: int = 24, *,
                        now: datetime | None = None) -> dict[int, list[dict[str, Any]]]:
    """hourly_uptime for many services in two queries (the sparklines of the SLA table)."""
    now = now or timezone.now()
    start = rollups.floor_to(now, rollups.HOUR) - timedelta(hours=hours - 1)
    totals = rollups.period_totals(service_ids, rollups.HOUR, start, now)
    slots = [start + timedelta(hours=i) for i in range(hours)]
    return {svc_id: [_point(f"{hour:%H}:00", totals[svc_id].get(hour)) for hour in slots] for svc_id in service_ids}


def _point(label: str, cell: list[int] | None) -> dict[str, Any]:
    total, up = cell or (0, 0)
    return {"label": label, "uptime": 100.0 * up / total if total else None, "probes": total}


def latency_series(service: Service, minutes: int = 60, *, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or timezone.now()
    rows = ProbeRollup.objects.filter(service=service, span=rollups.MINUTE,
                                      start__gte=minute_floor(now - timedelta(minutes=minutes)))
    return [{"at": m, "p50": p50, "p95": p95}
            for m, p50, p95 in rows.order_by("start").values_list("start", "p50_ms", "p95_ms")]


def prune(now: datetime | None = None) -> int:
    """Finished alert deliveries are kept 30 days."""
    now = now or timezone.now()
    return AlertDelivery.objects.filter(created_at__lt=now - timedelta(days=30)).exclude(
        status=AlertDelivery.Status.PENDING).delete()[0]


# --- the SLA table (one line per service) -------------------------------------------------------------
STATUS_ORDER = {"burning fast": 0, "burning": 1, "down": 2, "maintenance": 3, "no data": 4, "ok": 5}


def table_rows(services: list[Service], *, now: datetime | None = None) -> list[dict[str, Any]]:
    """One line per service for the SLA overview: status, uptime 24 h / 30 d, availability budget
    left, its burn rate over the last hour, the active incidents. Seven queries whatever the fleet
    size (a grouped aggregate per window, incidents, maintenance). `services` carry their
    objectives and, when annotated, live_running (a desired service with none running is down)."""
    now = now or timezone.now()
    ids = [svc.pk for svc in services]
    hour = fleet_window_stats(ids, WINDOWS["1h"], now=now)
    day = fleet_window_stats(ids, WINDOWS["24h"], now=now)
    month = fleet_window_stats(ids, WINDOWS["30d"], now=now)
    incidents: dict[int, list[Incident]] = {i: [] for i in ids}
    for inc in Incident.objects.filter(service_id__in=ids, status__in=Incident.ACTIVE).order_by("opened_at"):
        incidents[inc.service_id].append(inc)
    paused = services_in_maintenance(ids, now)
    rows = []
    for svc in services:
        kind = Incident.Kind.AVAILABILITY
        active = incidents[svc.pk]
        if any(i.severity == Incident.Severity.PAGE for i in active):
            status = "burning fast"
        elif active:
            status = "burning"
        elif svc.pk in paused:
            status = "maintenance"
        elif svc.desired_instances and getattr(svc, "live_running", None) == 0:
            status = "down"
        elif not day[svc.pk].total:
            status = "no data"
        else:
            status = "ok"
        rows.append({
            "service": svc, "status": status, "incidents": active,
            "uptime_24h": day[svc.pk].uptime, "uptime_30d": month[svc.pk].uptime,
            "budget": budget_remaining(svc, kind, stats=month[svc.pk]),
            "burn": round(burn_rate(svc, hour[svc.pk], kind), 2) if hour[svc.pk].total else None,
            "probes_24h": day[svc.pk].total,
        })
    return rows
