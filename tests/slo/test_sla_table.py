"""The SLA overview is a table, one line per service: paged, sorted, filtered, and a constant
number of queries whatever the fleet size."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from fleet.models import Instance
from health import rollups
from health.models import ProbeResult
from slo import actions as slo_actions
from slo.models import Incident
from tests.conftest import service_with


def probes(svc, *, good: int, bad: int = 0) -> None:
    inst = Instance.objects.create(service=svc, driver="process", state="running")
    now = timezone.now()
    ProbeResult.objects.bulk_create([ProbeResult(service=svc, instance=inst, at=now, ok=ok, latency_ms=10.0)
                                     for ok in [True] * good + [False] * bad])
    rollups.rollup_recent(now, minutes=1)


def names(body: str) -> list[str]:
    return re.findall(r'<tr data-service="([^"]+)">', body)


def test_lines_sort_filter_and_page(personas, clients) -> None:
    for i in range(55):
        svc = service_with(f"svc-{i:02d}")
        if i < 3:
            probes(svc, good=90 + i, bad=10 - i)  # the three worst, worst first: svc-00, 01, 02
        elif i < 10:
            probes(svc, good=100)
    alice = clients["alice"]
    first = names(alice.get("/sla/?sort=name").content.decode())
    assert len(first) == 50 and first[:2] == ["svc-00", "svc-01"]
    assert names(alice.get("/sla/?sort=name&page=2").content.decode()) == [f"svc-{i}" for i in range(50, 55)]
    assert names(alice.get("/sla/?sort=-name").content.decode())[0] == "svc-54"
    # Worst uptime first; services without probes last in either direction.
    worst = names(alice.get("/sla/?sort=uptime_24h").content.decode())
    assert worst[:3] == ["svc-00", "svc-01", "svc-02"] and worst[3] not in ("svc-10", "svc-54")
    best = names(alice.get("/sla/?sort=-uptime_24h").content.decode())
    assert best[9] == "svc-00" and best[10] == "svc-10"
    assert names(alice.get("/sla/?q=svc-4").content.decode()) == [f"svc-4{i}" for i in range(10)]
    nodata = names(alice.get("/sla/?status=no+data&sort=name").content.decode())
    assert nodata[0] == "svc-10" and len(nodata) == 45
    # Out-of-range and unknown parameters fall back rather than fail.
    assert names(alice.get("/sla/?sort=name&page=99").content.decode())[0] == "svc-50"
    assert len(names(alice.get("/sla/?sort=DROP&page=x&status=bogus").content.decode())) == 50


def test_status_says_what_needs_attention(personas, clients) -> None:
    burning = service_with("burning")
    probes(burning, good=50)
    slo_actions.open_incident(burning, kind=Incident.Kind.AVAILABILITY, severity=Incident.Severity.PAGE,
                              title="down", evidence={})
    down = service_with("down")
    down.desired_instances = 1
    down.save(update_fields=["desired_instances"])
    probes(service_with("fine"), good=50)
    body = clients["bob"].get("/sla/").content.decode()
    assert names(body)[:2] == ["burning", "down"]  # by status: most urgent first
    line = body[body.index('<tr data-service="fine">'):]
    assert ">ok<" in line[: line.index("</tr>")]


def test_dave_sees_no_lines(personas, clients) -> None:
    service_with("web")
    assert names(clients["dave"].get("/sla/").content.decode()) == []
    assert names(clients["bob"].get("/sla/").content.decode()) == ["web"]


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_queries_do_not_grow_with_the_fleet(personas, clients, who: str) -> None:
    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert clients[who].get("/sla/").status_code == 200
        return len(ctx.captured_queries)

    for i in range(3):
        probes(service_with(f"a{i}"), good=10)
    small = count()
    for i in range(40):
        probes(service_with(f"b{i}"), good=10)
    assert count() == small


def test_old_history_reads_settled_rows(personas, clients) -> None:
    svc = service_with("old")
    inst = Instance.objects.create(service=svc, driver="process", state="running")
    at = timezone.now() - timedelta(days=10)
    ProbeResult.objects.bulk_create([ProbeResult(service=svc, instance=inst, at=at, ok=ok, latency_ms=5.0)
                                     for ok in [True] * 9 + [False]])
    rollups.rollup_recent(at, minutes=1)
    rollups.settle(at, at + timedelta(minutes=1))
    body = clients["alice"].get("/sla/").content.decode()
    line = body[body.index('<tr data-service="old">'):]
    assert "90.000 %" in line[: line.index("</tr>")]  # 30 d uptime from the day row
