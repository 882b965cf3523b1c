"""The SRE workbook's three burn-rate window pairs: each fires at its factor and not below, with
the severity its SLO gives it; windows tell the pairs apart; escalation, resolution; the fleet
is evaluated in a constant number of queries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEntry
from health import rollups
from health.models import ProbeRollup
from slo import sla
from slo.models import Incident, Objectives
from tests.conftest import service_with
from tests.slo.test_sla import probes

OFF = 1000  # the largest factor the objectives accept: a pair set to it never fires in these tests

# (pair, its factor field, default factor, default severity, slow probes in 100 at the factor)
PAIRS = [
    ("1h/5m", "burn_1h", 14.4, "page", 72),  # 72 % slow / 5 % budget = 14.4×
    ("6h/30m", "burn_6h", 6.0, "page", 30),
    ("3d/6h", "burn_3d", 1.0, "ticket", 5),
]


def test_the_defaults_are_the_workbook_s() -> None:
    obj = Objectives()
    assert [(getattr(obj, f"{p}_factor"), getattr(obj, f"{p}_severity")) for _, p, *_ in PAIRS] == \
        [(14.4, "page"), (6.0, "page"), (1.0, "ticket")]
    assert sla.BURN_WINDOWS == [300, 1800, 3600, 6 * 3600, 3 * 86400]


@pytest.mark.parametrize(("pair", "prefix", "factor", "severity", "slow"), PAIRS)
@pytest.mark.parametrize("below", [False, True])
def test_each_pair_fires_at_its_factor_and_not_below(db: None, pair, prefix, factor, severity, slow,
                                                     below: bool) -> None:
    # Only this pair may fire: the others are set out of reach (what a per-SLO factor is for).
    others = {f"{p}_factor": OFF for _, p, *_ in PAIRS if p != prefix}
    svc = service_with("svc", latency_objective_ms=200, **others)
    slow -= 1 if below else 0  # one slow probe fewer: just under the factor
    probes(svc, timezone.now(), good=100 - slow, slow=slow)
    burn = sla.evaluate(svc)["latency"]
    assert burn.rates["5m"] == pytest.approx(slow / 100 / 0.05)
    if below:
        assert burn.alert is None and not Incident.objects.exists()
        return
    assert burn.alert == pair and burn.firing == [pair]
    inc = Incident.objects.get(service=svc, kind="latency")
    assert inc.severity == severity and inc.evidence["alert"] == pair
    assert inc.evidence["pair"]["factor"] == factor and inc.evidence["pair"]["severity"] == severity
    assert f"≥ {factor:g}× over {pair}" in inc.title


def test_the_severity_of_each_pair_is_the_slo_s(db: None) -> None:
    # A service whose owners want the 3-day pair to page and the 1-hour pair only to ticket.
    svc = service_with("svc", burn_3d_severity="page", burn_1h_severity="ticket", burn_6h_factor=OFF)
    other = service_with("other", burn_6h_factor=OFF)
    now = timezone.now()
    probes(svc, now, good=99, bad=1)  # 1 % failing / 0.1 % budget = 10×: the 3-day pair only
    probes(other, now, good=99, bad=1)
    sla.evaluate_all(now)
    assert Incident.objects.get(service=svc).severity == "page"
    assert Incident.objects.get(service=other).severity == "ticket"  # the default
    # Both burn at 30× now: svc's 1-hour pair is a ticket, but its 3-day pair still pages.
    probes(svc, now, good=60, bad=4)
    assert sla.evaluate(svc, now=now)["availability"].firing == ["1h/5m", "3d/6h"]
    assert sla.evaluate(svc, now=now)["availability"].alert == "3d/6h"  # the most severe decides


def test_the_windows_tell_the_pairs_apart(db: None) -> None:
    svc = service_with("svc", latency_objective_ms=200)
    now = timezone.now()
    # Slow probes 3 hours ago: inside 6 h and 3 d, outside 1 h and 30 min.
    probes(svc, now - timedelta(hours=3), good=50, slow=50)
    probes(svc, now - timedelta(minutes=2), good=100)
    burn = sla.evaluate(svc, now=now)["latency"]
    assert burn.firing == ["3d/6h"] and burn.rates["6h"] == pytest.approx(5.0) and burn.rates["30m"] == 0
    assert Incident.objects.get(service=svc).severity == "ticket"
    # Slow again 20 minutes ago: the 6 h / 30 min pair fires too and the ticket becomes a page.
    probes(svc, now - timedelta(minutes=20), good=20, slow=80)
    burn = sla.evaluate(svc, now=now)["latency"]
    assert burn.firing == ["6h/30m", "3d/6h"] and burn.alert == "6h/30m"
    inc = Incident.objects.get(service=svc)
    assert inc.severity == "page" and inc.evidence["escalation"]["alert"] == "6h/30m"
    assert AuditEntry.objects.filter(action="incident.escalate", payload__from="ticket").count() == 1


def test_a_3_day_window_reads_the_hour_tier(db: None) -> None:
    """The 3-day window starts on the hour and reaches back past the 48 h of minute rows."""
    svc = service_with("svc")
    now = timezone.now()
    probes(svc, now - timedelta(hours=60), good=90, bad=10)
    probes(svc, now, good=100)
    # As retention leaves it: no minute rows older than 48 h, only their hour and day rows.
    assert ProbeRollup.objects.filter(span=rollups.MINUTE, start__lt=now - timedelta(hours=48)).delete()[0]
    stats = sla.window_stats(svc, 3 * 86400, now=now)
    assert (stats.total, stats.down) == (200, 10)
    assert sla.window_stats(svc, 6 * 3600, now=now).down == 0


def test_an_incident_resolves_when_no_pair_fires(db: None) -> None:
    svc = service_with("svc")
    now = timezone.now()
    probes(svc, now, good=997, bad=3)  # 3×: the 3-day pair only
    sla.evaluate(svc, now=now)
    inc = Incident.objects.get(service=svc)
    assert inc.status == "open" and inc.severity == "ticket"
    # 7 hours later the 6-hour short window is clean: the 3-day window still burns, the pair does not.
    later = now + timedelta(hours=7)
    probes(svc, later, good=100)
    burn = sla.evaluate(svc, now=later)["availability"]
    assert burn.rates["3d"] > 1 and burn.rates["6h"] == 0 and burn.alert is None
    inc.refresh_from_db()
    assert inc.status == "resolved"
    entry = AuditEntry.objects.get(action="incident.resolve")
    assert entry.payload["evidence"]["alert"] is None and entry.payload["evidence"]["firing"] == []


def test_the_fleet_is_evaluated_in_a_constant_number_of_queries(db: None) -> None:
    def queries(n: int) -> int:
        Incident.objects.all().delete()
        now = timezone.now()
        for i in range(n):
            svc = service_with(f"q{n}-{i}", burn_6h_factor=1 + i)  # per-service factors, same windows
            probes(svc, now, good=100)
        with CaptureQueriesContext(connection) as ctx:
            sla.evaluate_all(now)
        return len(ctx)

    small, large = queries(2), queries(8)
    assert small == large
    # services, one grouped query per window (five), active incidents, maintenance windows
    assert large <= 3 + len(sla.BURN_WINDOWS)
