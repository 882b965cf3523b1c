"""GET /metrics: Prometheus' text format with the right values, refused unless a token or an
allowed address says otherwise (and refused by default in production), and a fixed number of
queries whatever the fleet size. The real Prometheus scraping it: test_metrics_prometheus.py."""

from __future__ import annotations

import runpy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import OrmQ
from prometheus_client.parser import text_string_to_metric_families

from audit import events
from audit.actions import record
from audit.models import AuditEntry
from autoscaling.models import AutoscaleDecision, AutoscaleSettings
from controller.models import LoopBeat
from core.stats import LATENCY_BUCKETS_MS, minute_floor
from fleet.models import Instance, Service
from health import rollups
from health.models import ProbeResult, ProbeRollup
from slo.models import Incident
from workflows.models import StepRun, WorkflowDefinition, WorkflowRun

pytestmark = pytest.mark.django_db
TOKEN = "metrics-token-0123456789"
SETTINGS = Path(__file__).resolve().parents[2] / "hmsmgmt" / "settings.py"


@pytest.fixture
def open_metrics(settings) -> None:  # type: ignore[no-untyped-def]
    settings.HMS_METRICS_TOKEN = TOKEN
    settings.HMS_METRICS_ALLOW = ()


def scrape(client: Client | None = None, **extra: Any) -> dict[tuple[str, frozenset], float]:
    resp = (client or Client()).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **extra)
    assert resp.status_code == 200, resp.content[:300]
    assert resp["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(resp.content.decode()):
        assert family.name.startswith("hmsmgmt_")
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def fill(svc: Service, *, now, failovers: int = 1) -> None:  # type: ignore[no-untyped-def]
    """What a service leaves behind: instances in every state, fail-overs, today's probes, an
    incident, autoscaler decisions and scale calls."""
    Instance.objects.bulk_create([
        Instance(service=svc, driver="process", ref=f"{svc.name}-{n}", state=state)
        for n, state in enumerate([Instance.State.RUNNING, Instance.State.RUNNING, Instance.State.STARTING,
                                   Instance.State.EXITED, Instance.State.STOPPED])
    ])
    with transaction.atomic():
        for _ in range(failovers):
            record(events.FAILOVER, actor="system:controller", target=svc, payload={"cause": "test"})
        record(events.SCALE, actor="system:autoscaler", target=svc, payload={"from": 2, "to": 3})
        record(events.SCALE, actor="system:autoscaler", target=svc, outcome=AuditEntry.Outcome.DENIED)
        record(events.SCALE, actor="bob", target=svc, payload={"from": 3, "to": 4})  # not the autoscaler's
    hist = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    hist[0], hist[2] = 3, 5  # ≤ 5 ms: 3, ≤ 25 ms: 5
    ProbeRollup.objects.bulk_create([
        ProbeRollup(service=svc, span=rollups.DAY, start=rollups.floor_to(now, rollups.DAY),
                    total=10, up=8, down=2, slow=1, excluded=3, hist=hist),
        ProbeRollup(service=svc, span=rollups.MINUTE, start=minute_floor(now), total=10, up=9, down=1, hist=hist),
    ])
    Incident.objects.create(service=svc, kind=Incident.Kind.AVAILABILITY, severity=Incident.Severity.PAGE,
                            title="down", opened_at=now)
    Incident.objects.create(service=svc, kind=Incident.Kind.LATENCY, severity=Incident.Severity.TICKET,
                            title="slow", opened_at=now, status=Incident.Status.RESOLVED)
    AutoscaleDecision.objects.bulk_create([
        AutoscaleDecision(service=svc, at=now - timedelta(seconds=30), current=2, raw=2, desired=2, summary="-"),
        AutoscaleDecision(service=svc, at=now - timedelta(seconds=15), current=2, raw=5, desired=4,
                          applied=True, summary="up"),
    ])


@pytest.fixture
def fleet(open_metrics) -> Service:  # type: ignore[no-untyped-def]
    now = timezone.now()
    svc = Service.objects.create(name="HMS-SVC", command="x", desired_instances=3)
    AutoscaleSettings.objects.filter(pk=svc.pk).update(autoscale_enabled=True)
    fill(svc, now=now, failovers=2)
    Service.objects.create(name="idle", command="x")
    flow = WorkflowDefinition.objects.create(slug="reportingFlow", name="r", steps=[])
    done = [WorkflowRun.objects.create(definition=flow, flow_slug=flow.slug, status=s)
            for s in ("succeeded", "succeeded", "failed")]
    live = WorkflowRun.objects.create(definition=flow, flow_slug=flow.slug, status="running")
    for i, took in enumerate((0.3, 3.0)):
        StepRun.objects.create(run=done[i], name="export", action="python", status="succeeded",
                               started_at=now - timedelta(seconds=took), finished_at=now)
    StepRun.objects.create(run=live, name="export", action="python", status="running", started_at=now)
    StepRun.objects.create(run=live, name="mail", action="http", status="queued")
    OrmQ.objects.bulk_create([OrmQ(key="hmsmgmt", payload="x", lock=now - timedelta(seconds=1)),
                              OrmQ(key="hmsmgmt", payload="x", lock=now - timedelta(seconds=2)),
                              OrmQ(key="hmsmgmt", payload="x", lock=now + timedelta(seconds=60))])  # claimed
    beat = {"host": "h1", "started_at": now - timedelta(hours=1), "passes": 7}
    LoopBeat.objects.bulk_create([
        LoopBeat(pid=10, loop="tick", beat_at=now, last_pass_ms=12.5, leader=True, **beat),
        LoopBeat(pid=13, loop="tick", beat_at=now, last_pass_ms=0, **beat),  # a standby
        LoopBeat(pid=11, loop="monitor", beat_at=now - timedelta(minutes=1), last_pass_ms=80, leader=True,
                 **beat),  # stale: no longer counts as leading
        LoopBeat(pid=12, loop="sealer", beat_at=now - timedelta(minutes=10), last_pass_ms=1, **beat),  # gone
    ])
    return svc


# --- values ------------------------------------------------------------------------------------------
def test_fleet_and_failovers(fleet) -> None:  # type: ignore[no-untyped-def]
    s = scrape()
    assert value(s, "hmsmgmt_service_instances", service="HMS-SVC", state="running") == 2
    assert value(s, "hmsmgmt_service_instances", service="HMS-SVC", state="starting") == 1
    assert value(s, "hmsmgmt_service_instances", service="HMS-SVC", state="desired") == 3
    assert value(s, "hmsmgmt_service_instances", service="idle", state="running") == 0
    assert value(s, "hmsmgmt_failovers_total", service="HMS-SVC") == 2
    assert value(s, "hmsmgmt_failovers_total", service="idle") == 0  # present before the first one
    assert value(s, "hmsmgmt_service_restarts_total", service="HMS-SVC") == 1
    assert value(s, "hmsmgmt_service_instance_starts_total", service="HMS-SVC") == 5
    assert value(s, "hmsmgmt_service_backoff", service="HMS-SVC") == 0
    assert value(s, "hmsmgmt_service_in_maintenance", service="HMS-SVC") == 0


def test_probes_and_latency_histogram(fleet) -> None:  # type: ignore[no-untyped-def]
    s = scrape()
    assert value(s, "hmsmgmt_probes_total", service="HMS-SVC", result="up") == 8
    assert value(s, "hmsmgmt_probes_total", service="HMS-SVC", result="down") == 2
    assert value(s, "hmsmgmt_probes_total", service="HMS-SVC", result="excluded") == 3
    assert value(s, "hmsmgmt_probes_slow_total", service="HMS-SVC") == 1
    bucket = "hmsmgmt_probe_latency_seconds_bucket"
    assert value(s, bucket, service="HMS-SVC", le="0.005") == 3
    assert value(s, bucket, service="HMS-SVC", le="0.01") == 3
    assert value(s, bucket, service="HMS-SVC", le="0.025") == 8  # cumulative
    assert value(s, bucket, service="HMS-SVC", le="+Inf") == 8
    assert value(s, bucket, service="idle", le="+Inf") == 0
    assert value(s, bucket, service="idle", le="0.005") == 0  # every bucket on every series
    assert value(s, "hmsmgmt_probes_total", service="idle", result="up") == 0


def test_slo_windows_and_incidents(fleet) -> None:  # type: ignore[no-untyped-def]
    s = scrape()
    for window in ("5m", "30m", "1h", "6h", "24h", "30d"):  # the current minute is in all of them
        assert value(s, "hmsmgmt_slo_uptime_ratio", service="HMS-SVC", window=window) == pytest.approx(0.9)
    # 10 % down against a 0.1 % budget: 100×; latency: no slow probe in the minute row.
    assert value(s, "hmsmgmt_slo_burn_rate", service="HMS-SVC", objective="availability",
                 window="5m") == pytest.approx(100)
    assert value(s, "hmsmgmt_slo_burn_rate", service="HMS-SVC", objective="latency", window="1h") == 0
    assert value(s, "hmsmgmt_slo_error_budget_remaining_ratio", service="HMS-SVC",
                 objective="availability") == pytest.approx(-99)
    assert value(s, "hmsmgmt_slo_uptime_objective_ratio", service="HMS-SVC") == pytest.approx(0.999)
    assert value(s, "hmsmgmt_slo_latency_objective_seconds", service="HMS-SVC") == pytest.approx(0.3)
    assert ("hmsmgmt_slo_uptime_ratio", frozenset({"service": "idle", "window": "1h"}.items())) not in s
    assert value(s, "hmsmgmt_incidents_open", service="HMS-SVC", severity="page") == 1
    assert value(s, "hmsmgmt_incidents_open", service="HMS-SVC", severity="ticket") == 0  # resolved
    assert value(s, "hmsmgmt_incidents_open", service="idle", severity="page") == 0


def test_autoscaler(fleet) -> None:  # type: ignore[no-untyped-def]
    s = scrape()
    assert value(s, "hmsmgmt_autoscaler_enabled", service="HMS-SVC") == 1
    assert value(s, "hmsmgmt_autoscaler_enabled", service="idle") == 0
    assert value(s, "hmsmgmt_autoscaler_recommended_instances", service="HMS-SVC") == 4  # the latest
    assert value(s, "hmsmgmt_autoscaler_raw_recommendation", service="HMS-SVC") == 5
    assert value(s, "hmsmgmt_autoscaler_last_decision_applied", service="HMS-SVC") == 1
    latest = AutoscaleDecision.objects.filter(service=fleet).order_by("-at").first()
    assert value(s, "hmsmgmt_autoscaler_last_decision_timestamp_seconds",
                 service="HMS-SVC") == pytest.approx(latest.at.timestamp())
    assert ("hmsmgmt_autoscaler_recommended_instances", frozenset({"service": "idle"}.items())) not in s
    assert value(s, "hmsmgmt_autoscaler_scales_total", service="HMS-SVC", outcome="success") == 1
    assert value(s, "hmsmgmt_autoscaler_scales_total", service="HMS-SVC", outcome="denied") == 1


def test_workflows_queue_controller_audit(fleet) -> None:  # type: ignore[no-untyped-def]
    s = scrape()
    assert value(s, "hmsmgmt_workflow_runs", flow="reportingFlow", status="succeeded") == 2
    assert value(s, "hmsmgmt_workflow_runs", flow="reportingFlow", status="failed") == 1
    assert value(s, "hmsmgmt_workflow_runs", flow="reportingFlow", status="running") == 1
    assert value(s, "hmsmgmt_workflow_steps", status="running") == 1
    assert value(s, "hmsmgmt_workflow_steps", status="queued") == 1
    assert value(s, "hmsmgmt_workflow_steps", status="retrying") == 0
    assert value(s, "hmsmgmt_workers_busy") == 1
    step = {"flow": "reportingFlow", "step": "export"}
    assert value(s, "hmsmgmt_workflow_step_duration_seconds_bucket", le="0.25", **step) == 0
    assert value(s, "hmsmgmt_workflow_step_duration_seconds_bucket", le="0.5", **step) == 1
    assert value(s, "hmsmgmt_workflow_step_duration_seconds_bucket", le="5.0", **step) == 2
    assert value(s, "hmsmgmt_workflow_step_duration_seconds_count", **step) == 2
    assert value(s, "hmsmgmt_workflow_step_duration_seconds_sum", **step) == pytest.approx(3.3)
    assert value(s, "hmsmgmt_queue_depth", broker="orm") == 2  # the claimed task is a worker's
    tick = {"loop": "tick", "host": "h1", "pid": "10"}
    assert value(s, "hmsmgmt_controller_loop_up", **tick) == 1
    assert value(s, "hmsmgmt_controller_loop_up", loop="monitor", host="h1", pid="11") == 0
    assert value(s, "hmsmgmt_controller_leader", **tick) == 1
    assert value(s, "hmsmgmt_controller_leader", loop="tick", host="h1", pid="13") == 0
    assert value(s, "hmsmgmt_controller_leader", loop="monitor", host="h1", pid="11") == 0
    assert ("hmsmgmt_controller_loop_up", frozenset({"loop": "sealer", "host": "h1", "pid": "12"}.items())) not in s
    assert value(s, "hmsmgmt_controller_pass_duration_seconds", **tick) == pytest.approx(0.0125)
    assert value(s, "hmsmgmt_controller_loop_passes_total", **tick) == 7
    assert value(s, "hmsmgmt_controller_loops_running", loop="tick") == 2  # the leader and a standby
    assert value(s, "hmsmgmt_controller_loops_running", loop="monitor") == 0
    assert value(s, "hmsmgmt_controller_loops_running", loop="probes") == 0
    assert value(s, "hmsmgmt_audit_pending_seal") == AuditEntry.objects.filter(seq__isnull=True).count() > 0
    assert value(s, "hmsmgmt_audit_oldest_pending_seal_seconds") >= 0


def test_queries_do_not_grow_with_the_fleet(open_metrics) -> None:  # type: ignore[no-untyped-def]
    now = timezone.now()

    def add(start: int, stop: int) -> None:
        for i in range(start, stop):
            fill(Service.objects.create(name=f"svc-{i:03d}", command="x", desired_instances=2), now=now)

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            scrape()
        return len(ctx.captured_queries)

    add(0, 3)
    small = count()
    add(3, 30)
    assert count() == small
    assert small <= 25


# --- access ----------------------------------------------------------------------------------------
def test_production_default_is_closed_and_says_how_to_open(settings) -> None:  # type: ignore[no-untyped-def]
    settings.HMS_METRICS_TOKEN, settings.HMS_METRICS_ALLOW = "", ()
    resp = Client().get("/metrics")
    assert resp.status_code == 403
    body = resp.json()
    assert body["error"] == "metrics_disabled"
    assert "HMS_METRICS_TOKEN" in body["detail"] and "HMS_METRICS_ALLOW" in body["detail"]
    entry = AuditEntry.objects.get(action=events.ACCESS_REFUSED)  # refusals are audited as elsewhere
    assert entry.payload["path"] == "/metrics" and entry.payload["error"] == "metrics_disabled"


def test_token(open_metrics) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    resp = client.get("/metrics")
    assert resp.status_code == 401 and resp["WWW-Authenticate"].startswith("Bearer")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer " + "x" * len(TOKEN))
    assert wrong.status_code == 401 and "wrong" in wrong.json()["detail"]
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"bearer {TOKEN}").status_code == 200  # scheme: any case
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_allowlist(settings) -> None:  # type: ignore[no-untyped-def]
    import ipaddress

    settings.HMS_METRICS_TOKEN = ""
    settings.HMS_METRICS_ALLOW = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    client = Client()
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="2001:db8::7").status_code == 200
    refused = client.get("/metrics", REMOTE_ADDR="192.0.2.1")
    assert refused.status_code == 403 and "HMS_METRICS_ALLOW" in refused.json()["detail"]
    # A forwarded header is the client's own claim: only the peer address counts.
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="10.1.2.3").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403  # loopback is not special
    # With a token too, an address outside the list needs it.
    settings.HMS_METRICS_TOKEN = TOKEN
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.1").status_code == 401
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.1", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200


# --- settings (read once, failing fast) -------------------------------------------------------------
def _settings(monkeypatch, **env: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    for name in ("HMS_METRICS_TOKEN", "HMS_METRICS_ALLOW", "HMS_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    for name, val in env.items():
        monkeypatch.setenv(name, val)
    return runpy.run_path(str(SETTINGS))


def test_settings(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert _settings(monkeypatch)["HMS_METRICS_ALLOW"] == ()  # not debug: closed
    debug = _settings(monkeypatch, HMS_DEBUG="1")["HMS_METRICS_ALLOW"]
    assert [str(n) for n in debug] == ["127.0.0.0/8", "::1/128"]  # make up: loopback
    assert _settings(monkeypatch, HMS_DEBUG="1", HMS_METRICS_TOKEN=TOKEN)["HMS_METRICS_ALLOW"] == ()
    allow = _settings(monkeypatch, HMS_METRICS_ALLOW=" 10.1.2.3/8, 192.0.2.7 ,::1")["HMS_METRICS_ALLOW"]
    assert [str(n) for n in allow] == ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]
    with pytest.raises(ImproperlyConfigured, match="HMS_METRICS_ALLOW"):
        _settings(monkeypatch, HMS_METRICS_ALLOW="10.0.0.0/8,prometheus.local")
    with pytest.raises(ImproperlyConfigured, match="HMS_METRICS_TOKEN"):
        _settings(monkeypatch, HMS_METRICS_TOKEN="short")
    with pytest.raises(ImproperlyConfigured, match="HMS_METRICS_TOKEN"):
        _settings(monkeypatch, HMS_METRICS_TOKEN="a token with spaces in it")
    assert _settings(monkeypatch, HMS_METRICS_TOKEN=TOKEN)["HMS_METRICS_TOKEN"] == TOKEN


def test_probe_counters_are_what_the_rollup_job_rolled(open_metrics) -> None:  # type: ignore[no-untyped-def]
    svc = Service.objects.create(name="HMS-SVC", command="x", desired_instances=1)
    inst = Instance.objects.create(service=svc, driver="process", state=Instance.State.RUNNING)
    now = timezone.now()
    ProbeResult.objects.bulk_create(
        [ProbeResult(service=svc, instance=inst, at=now, ok=True, latency_ms=ms) for ms in (3, 4, 20, 400)]
        + [ProbeResult(service=svc, instance=inst, at=now, ok=False, latency_ms=1000)])
    rollups.Rollup()()  # the controller's job: the current minute, its hour and today's day row
    s = scrape()
    assert value(s, "hmsmgmt_probes_total", service="HMS-SVC", result="up") == 4
    assert value(s, "hmsmgmt_probes_total", service="HMS-SVC", result="down") == 1
    assert value(s, "hmsmgmt_probes_slow_total", service="HMS-SVC") == 1  # 400 ms > 300 ms
    assert value(s, "hmsmgmt_probe_latency_seconds_bucket", service="HMS-SVC", le="0.005") == 2
    assert value(s, "hmsmgmt_probe_latency_seconds_bucket", service="HMS-SVC", le="0.5") == 4
