"""SLA: uptime and latency over rolling windows, error budgets, burn-rate alerts and the incidents
they open and resolve (alert delivery: slo.alerts).

Two objectives per service, both measured on probes (from the per-minute roll-ups):
- availability: a probe is bad when it failed; budget = 1 − uptime_objective (99.9 % → 0.1 %).
- latency: "p95 ≤ N ms" means at most 5 % of good probes may be slower than N; budget = 5 %.
Burn rate = bad fraction / budget (1× spends exactly the budget over the SLO period). Alerts follow
the multi-window, multi-burn-rate recipe of Google's SRE workbook: fast burn (page) when both the
1 h and the 5 min windows burn ≥ 14.4×; slow burn (ticket) when both 6 h and 30 min burn ≥ 6×.
The short window makes an alert stop soon after the problem does; the long one keeps a blip from
paging. Probes inside a maintenance window are left out of every figure.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from core.stats import LATENCY_BUCKETS_MS, hist_percentile, minute_floor
from fleet.models import Service
from health.models import MaintenanceWindow, ProbeRollup
from health.selectors import maintenance_window
from slo import actions
from slo.models import AlertDelivery, Incident

log = logging.getLogger(__name__)

LATENCY_BUDGET = 0.05  # p95 objective: 5 % of probes may be slower
FAST = {"name": "fast", "long": 3600, "short": 300, "factor": 14.4, "severity": Incident.Severity.PAGE}
SLOW = {"name": "slow", "long": 6 * 3600, "short": 1800, "factor": 6.0, "severity": Incident.Severity.TICKET}
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
    """Sum the roll-ups whose minute falls in the window (minute granularity; the current,
    partial minute included)."""
    now = now or timezone.now()
    qs = ProbeRollup.objects.filter(service=service, minute__gte=minute_floor(now - timedelta(seconds=seconds)))
    agg = qs.aggregate(total=Sum("total"), up=Sum("up"), down=Sum("down"), slow=Sum("slow"))
    stats = WindowStats(seconds, **{k: v or 0 for k, v in agg.items()})
    if percentiles and stats.up and seconds <= 86400:
        merged = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        for hist in qs.values_list("hist", flat=True):
            for i, count in enumerate(hist or []):
                merged[i] += count
        stats.p50_ms, stats.p95_ms = hist_percentile(merged, 0.50), hist_percentile(merged, 0.95)
    return stats


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


@dataclass
class Burn:
    kind: str
    alert: str | None  # "fast" | "slow" | None
    rates: dict[str, float]
    probes: dict[str, int]

    @property
    def severity(self) -> str | None:
        return {"fast": FAST["severity"], "slow": SLOW["severity"]}.get(self.alert or "")


def burn_state(service: Service, kind: str, *, now: datetime | None = None,
               cache: dict[int, WindowStats] | None = None) -> Burn:
    now = now or timezone.now()
    cache = {} if cache is None else cache
    rates: dict[str, float] = {}
    probes: dict[str, int] = {}
    firing: str | None = None
    for rule in (FAST, SLOW):
        for which in ("long", "short"):
            secs = rule[which]
            if secs not in cache:
                cache[secs] = window_stats(service, secs, now=now, percentiles=False)
            label = _label(secs)
            rates[label] = round(burn_rate(service, cache[secs], kind), 2)
            probes[label] = cache[secs].total
        short = cache[rule["short"]]
        enough = short.total >= MIN_PROBES and (kind == Incident.Kind.AVAILABILITY or short.up >= MIN_PROBES)
        if firing is None and enough and rates[_label(rule["long"])] >= rule["factor"] \
                and rates[_label(rule["short"])] >= rule["factor"]:
            firing = rule["name"]
    return Burn(kind, firing, rates, probes)


def _label(seconds: int) -> str:
    return f"{seconds // 3600}h" if seconds >= 3600 else f"{seconds // 60}m"


# --- incidents --------------------------------------------------------------------------------------
def evaluate_all() -> None:
    # The objectives come with each service: one query for the fleet, not one per service.
    for svc in Service.objects.select_related("objectives"):
        try:
            evaluate(svc)
        except Exception:
            log.exception("SLA evaluation of %s failed", svc.name)


def evaluate(service: Service, *, now: datetime | None = None) -> dict[str, Burn]:
    """Open an incident per objective that burns fast or slow; resolve it once neither window
    pair burns. During maintenance nothing opens (those probes are excluded anyway)."""
    now = now or timezone.now()
    cache: dict[int, WindowStats] = {}
    out: dict[str, Burn] = {}
    maintenance = in_maintenance(service, now)
    for kind in (Incident.Kind.AVAILABILITY, Incident.Kind.LATENCY):
        burn = burn_state(service, kind, now=now, cache=cache)
        out[kind] = burn
        active = Incident.objects.filter(service=service, kind=kind, status__in=Incident.ACTIVE).first()
        evidence = {"burn_rates": burn.rates, "probes": burn.probes, "alert": burn.alert,
                    "objective": _objective_text(service, kind)}
        if burn.alert and active is None and maintenance is None:
            title = (f"{service.name}: {'fast' if burn.alert == 'fast' else 'slow'} burn of the "
                     f"{kind} budget ({_objective_text(service, kind)})")
            actions.open_incident(service, kind=kind, severity=burn.severity or Incident.Severity.PAGE,
                                  title=title, evidence=evidence)
        elif active is not None and burn.alert is None:
            actions.resolve_incident(active, evidence=evidence)
        elif active is not None and burn.alert == "fast" and active.severity != Incident.Severity.PAGE:
            actions.escalate_incident(active, severity=Incident.Severity.PAGE, evidence=evidence)
    return out


def fast_burning(service: Service) -> bool:
    """Used by the autoscaler: an open fast-burn incident on either objective."""
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
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    buckets: dict[Any, list[int]] = {}
    for minute, total, up in ProbeRollup.objects.filter(service=service, minute__gte=start).values_list(
            "minute", "total", "up"):
        b = buckets.setdefault(minute.date(), [0, 0])
        b[0] += total
        b[1] += up
    out = []
    for i in range(days):
        day = (start + timedelta(days=i)).date()
        total, up = buckets.get(day, (0, 0))
        out.append({"label": day.isoformat(), "uptime": 100.0 * up / total if total else None, "probes": total})
    return out


def hourly_uptime(service: Service, hours: int = 24, *, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or timezone.now()
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    buckets: dict[datetime, list[int]] = {}
    for minute, total, up in ProbeRollup.objects.filter(service=service, minute__gte=start).values_list(
            "minute", "total", "up"):
        b = buckets.setdefault(minute.replace(minute=0), [0, 0])
        b[0] += total
        b[1] += up
    out = []
    for i in range(hours):
        hour = start + timedelta(hours=i)
        total, up = buckets.get(hour, (0, 0))
        out.append({"label": f"{hour:%H}:00", "uptime": 100.0 * up / total if total else None, "probes": total})
    return out


def latency_series(service: Service, minutes: int = 60, *, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or timezone.now()
    rows = ProbeRollup.objects.filter(service=service, minute__gte=minute_floor(now - timedelta(minutes=minutes)))
    return [{"at": m, "p50": p50, "p95": p95}
            for m, p50, p95 in rows.order_by("minute").values_list("minute", "p50_ms", "p95_ms")]


def prune(now: datetime | None = None) -> int:
    """Finished alert deliveries are kept 30 days."""
    now = now or timezone.now()
    return AlertDelivery.objects.filter(created_at__lt=now - timedelta(days=30)).exclude(
        status=AlertDelivery.Status.PENDING).delete()[0]
