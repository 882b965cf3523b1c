"""SLA: windows, budgets and burn rates from roll-ups; incidents opening and resolving on their own;
alerts to a real webhook server (retried) and by email; maintenance excluded. The end-to-end test
drives a real breach through the controller and the workers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from django.core import mail
from django.utils import timezone

from audit.models import AuditEntry
from autoscaling.models import AutoscaleDecision
from console.forms import ServiceSettings
from fleet import actions
from fleet.models import Instance, Service
from health import actions as health_actions
from health import rollups
from health.models import ProbeResult
from slo import actions as slo_actions
from slo import alerts, sla
from slo.models import AlertChannel, AlertDelivery, Incident
from tests.conftest import service_with, wait_for


class Hook:
    """A webhook receiver on 127.0.0.1 answering with the given statuses in turn (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                status = hook.statuses.pop(0) if hook.statuses else 200
                if status == 200:
                    hook.received.append(body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def make_service(name: str = "svc", **fields) -> Service:
    return service_with(name, **fields)


def probes(svc: Service, at: datetime, *, good: int = 0, bad: int = 0, slow: int = 0, maint: bool = False) -> None:
    inst = svc.instances.first() or Instance.objects.create(service=svc, driver="process", state="running")
    rows = [(True, 10.0)] * good + [(False, 1.0)] * bad + [(True, svc.objectives.latency_objective_ms * 2.0)] * slow
    ProbeResult.objects.bulk_create([ProbeResult(service=svc, instance=inst, at=at, ok=ok, latency_ms=ms,
                                                 in_maintenance=maint) for ok, ms in rows])
    rollups.rollup_recent(at, minutes=1)
    # As the controller does when that minute closes: its hour and day rows are rebuilt.
    rollups.settle(at, at + timedelta(minutes=1))


# --- figures ---------------------------------------------------------------------------------------
def test_uptime_budget_and_burn_rate_over_windows(db: None) -> None:
    svc = make_service(uptime_objective=99.0)
    now = timezone.now()
    probes(svc, now - timedelta(hours=3), good=1000)
    probes(svc, now, good=95, bad=5)
    day = sla.window_stats(svc, 86400, now=now)
    hour = sla.window_stats(svc, 3600, now=now)
    assert (day.total, day.down) == (1100, 5) and (hour.total, hour.down) == (100, 5)
    assert hour.uptime == 95.0
    assert sla.burn_rate(svc, hour, Incident.Kind.AVAILABILITY) == pytest.approx(5.0)  # 5 % bad / 1 % budget
    assert sla.budget_remaining(svc) == pytest.approx(1 - (5 / 1100) / 0.01)
    assert hour.p95_ms == 10  # bucket upper bound


def test_maintenance_probes_count_for_nothing(db: None) -> None:
    svc = make_service()
    now = timezone.now()
    probes(svc, now, good=10)
    probes(svc, now, bad=50, maint=True)
    stats = sla.window_stats(svc, 3600, now=now)
    assert (stats.total, stats.down) == (10, 0) and stats.uptime == 100.0
    assert sla.evaluate(svc, now=now)[Incident.Kind.AVAILABILITY].alert is None


# --- incidents and alerts ---------------------------------------------------------------------------
def test_a_fast_burn_opens_an_incident_alerts_and_resolves_by_itself(db: None, hook: Hook) -> None:
    svc = make_service()
    slo_actions.save_alert_channel(AlertChannel(name="ops", kind="webhook", target=hook.url), actor="system:test")
    slo_actions.save_alert_channel(AlertChannel(name="mail", kind="email", target="ops@example.org"),
                                   actor="system:test")
    other = make_service("other")
    slo_actions.save_alert_channel(AlertChannel(name="not-ours", kind="webhook", target=hook.url, service=other),
                               actor="system:test")
    now = timezone.now()
    probes(svc, now, good=80, bad=20)  # 20 % failing against a 0.1 % budget: 200×

    burns = sla.evaluate(svc, now=now)
    assert burns["availability"].alert == "1h/5m" and burns["availability"].rates["1h"] == pytest.approx(200)
    assert burns["availability"].firing == ["1h/5m", "6h/30m", "3d/6h"]
    inc = Incident.objects.get(service=svc)
    assert inc.status == "open" and inc.severity == "page" and inc.kind == "availability"
    assert inc.evidence["burn_rates"]["5m"] >= 14.4 and inc.evidence["alert"] == "1h/5m"
    assert inc.evidence["pair"] == {"name": "1h/5m", "long": "1h", "short": "5m", "factor": 14.4, "severity": "page"}
    assert AuditEntry.objects.filter(action="incident.open", actor="system:sla").count() == 1
    deliveries = list(AlertDelivery.objects.filter(incident=inc).order_by("channel__name"))
    assert [d.channel.name for d in deliveries] == ["mail", "ops"]  # the other service's channel is not asked

    for d in deliveries:
        assert alerts.deliver(d.pk) == "sent"
    assert hook.received[0]["event"] == "opened" and hook.received[0]["service"] == "svc"
    assert hook.received[0]["severity"] == "page"
    assert mail.outbox[0].to == ["ops@example.org"] and "opened" in mail.outbox[0].subject
    assert AuditEntry.objects.filter(action="alert.sent").count() == 2
    assert alerts.deliver(deliveries[1].pk) == "skipped"  # a task run twice sends once

    # Still burning a minute later: still the one incident.
    sla.evaluate(svc, now=now + timedelta(seconds=30))
    assert Incident.objects.filter(service=svc).count() == 1

    # Healthy again: after 7 minutes the 1 h pair has cooled (5 min clean) but the 6 h / 30 min pair
    # still burns; after 40 minutes only the 3 d / 6 h pair does (a ticket's worth, the incident
    # stays open and stays a page); once 6 clean hours have passed it resolves.
    probes(svc, now + timedelta(minutes=7), good=300)
    assert sla.evaluate(svc, now=now + timedelta(minutes=7))["availability"].alert == "6h/30m"
    probes(svc, now + timedelta(minutes=40), good=300)
    assert sla.evaluate(svc, now=now + timedelta(minutes=40))["availability"].alert == "3d/6h"
    inc.refresh_from_db()
    assert inc.status == "open" and inc.severity == "page"
    later = now + timedelta(hours=6, minutes=10)
    probes(svc, later, good=300)
    sla.evaluate(svc, now=later)
    inc.refresh_from_db()
    assert inc.status == "resolved" and inc.resolved_at is not None
    assert AuditEntry.objects.filter(action="incident.resolve").count() == 1
    assert AlertDelivery.objects.filter(incident=inc, event="resolved").count() == 2


def test_slow_probes_open_a_latency_incident(db: None) -> None:
    svc = make_service(latency_objective_ms=200)
    now = timezone.now()
    probes(svc, now, good=10, slow=90)
    burns = sla.evaluate(svc, now=now)
    assert burns["latency"].alert == "1h/5m" and burns["availability"].alert is None
    assert Incident.objects.get(service=svc).kind == "latency"
    assert sla.fast_burning(svc)


def test_a_slow_burn_tickets_then_escalates_to_a_page(db: None) -> None:
    svc = make_service(latency_objective_ms=200)
    now = timezone.now()
    probes(svc, now, good=90, slow=10)  # 10 % slow against a 5 % budget: 2×, only the 3 d pair (1×)
    assert sla.evaluate(svc, now=now)["latency"].alert == "3d/6h"
    inc = Incident.objects.get(service=svc)
    assert inc.severity == "ticket" and not sla.fast_burning(svc)
    probes(svc, now, slow=400)
    sla.evaluate(svc, now=now)
    inc.refresh_from_db()
    assert inc.severity == "page" and Incident.objects.filter(service=svc).count() == 1
    assert inc.evidence["alert"] == "3d/6h" and inc.evidence["escalation"]["alert"] == "1h/5m"
    assert AuditEntry.objects.filter(action="incident.escalate").count() == 1


def test_webhooks_are_retried_then_given_up_and_audited(db: None, settings) -> None:
    settings.HMS_ALERT_BACKOFF_SECONDS = 0.01
    flaky, dead = Hook([500]), Hook([500, 502, 503, 500, 500])
    try:
        svc = make_service()
        slo_actions.save_alert_channel(AlertChannel(name="flaky", kind="webhook", target=flaky.url),
                                       actor="system:test")
        slo_actions.save_alert_channel(AlertChannel(name="dead", kind="webhook", target=dead.url), actor="system:test")
        inc = slo_actions.open_incident(svc, kind="availability", severity="page", title="t", evidence={})
        by_name = {d.channel.name: d for d in inc.deliveries.select_related("channel")}
        assert alerts.deliver(by_name["flaky"].pk) == "sent"
        assert alerts.deliver(by_name["dead"].pk) == "failed"
    finally:
        flaky.close()
        dead.close()
    by_name["flaky"].refresh_from_db()
    by_name["dead"].refresh_from_db()
    assert by_name["flaky"].attempts == 2 and by_name["flaky"].status == "sent"
    assert by_name["dead"].attempts == 4 and by_name["dead"].response_status == 500
    failed = AuditEntry.objects.get(action="alert.failed")
    assert failed.outcome == "error" and failed.payload["channel"] == "dead"


def test_an_incident_is_acknowledged_once(db: None) -> None:
    svc = make_service()
    inc = slo_actions.open_incident(svc, kind="latency", severity="page", title="slow", evidence={})
    assert slo_actions.acknowledge_incident(inc, actor="bob")
    assert not slo_actions.acknowledge_incident(inc, actor="carol")
    inc.refresh_from_db()
    assert inc.status == "acknowledged" and inc.acknowledged_by == "bob"
    assert AuditEntry.objects.filter(action="incident.acknowledge").count() == 1


# --- end to end: controller + workers + real instances ----------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_slow_then_failing_instances_page_scale_up_and_fail_over(transactional_db: None, stop_local_instances,
                                                                 spawn, hook: Hook) -> None:
    """Slowing the only instance breaches the latency objective: an incident opens, the webhook
    receives it, the autoscaler scales up within max and explains why. Then a failing instance is
    detected by the probes, failed over with evidence, and replaced — all on its own.
    (stop_local_instances comes before spawn so the controller is stopped before the instances
    are removed; the other way round it would start new ones in between.)"""
    svc = make_service("shop", probe_interval_seconds=1.0, probe_timeout_seconds=1.0, failure_threshold=2,
                       latency_objective_ms=200, autoscale_enabled=True, min_instances=1, max_instances=3,
                       target_cpu_percent=None, scale_down_stabilization_seconds=300)
    slo_actions.save_alert_channel(AlertChannel(name="ops", kind="webhook", target=hook.url), actor="system:test")
    actions.scale_service(svc, 1, actor="system:autoscaler")
    env = {"HMS_SLA_EVAL_SECONDS": "1", "HMS_AUTOSCALE_PERIOD_SECONDS": "1", "HMS_CONTROLLER_TICK_MS": "300",
           "HMS_OUTBOUND_ALLOW": "127.0.0.1"}
    spawn("controller", **env)
    spawn("qcluster", **env)
    spawn("qcluster", Q_CLUSTER_NAME="alerts", **env)  # alerts have a worker pool of their own

    def running() -> list[Instance]:
        return list(Instance.objects.filter(service=svc, state="running").exclude(port=None))

    (first,) = wait_for(running, timeout=30, message="first instance running")
    wait_for(lambda: ProbeResult.objects.filter(instance=first, ok=True).exists(), timeout=20,
             message="probes from the workers")
    requests.post(f"http://{first.host}:{first.port}/fault", json={"mode": "slow", "latency_ms": 450}, timeout=2)

    inc = wait_for(lambda: Incident.objects.filter(service=svc, kind="latency").first(), timeout=60,
                   message="a latency incident")
    # The 6 h / 30 min pair (6×, a page) or the 3 d / 6 h pair (1×, a ticket escalated to a page
    # once a page pair follows) usually fires first.
    pair = inc.evidence["pair"]
    assert inc.severity == pair["severity"] and inc.evidence["burn_rates"][pair["short"]] >= pair["factor"]
    wait_for(lambda: hook.received, timeout=30, message="the webhook")
    assert hook.received[0]["event"] == "opened" and hook.received[0]["kind"] == "latency"

    scaled = wait_for(lambda: AutoscaleDecision.objects.filter(service=svc, applied=True, desired__gt=1).first(),
                      timeout=30, message="an autoscaler scale-up")
    latency = next(m for m in scaled.inputs["metrics"] if m["name"] == "latency_p95")
    assert latency["value"] > 200 and latency["target"] == 200 and latency["proposal"] > 1
    assert 1 < scaled.desired <= 3
    entry = wait_for(lambda: AuditEntry.objects.filter(action="scale", actor="system:autoscaler",
                                                       payload__to=scaled.desired).first(), timeout=5)
    assert "latency_p95" in entry.payload["reason"]
    wait_for(lambda: len(running()) >= 2, timeout=30, message="the added instance running")
    svc.refresh_from_db()
    assert svc.desired_instances <= 3

    # Now make a (fast, new) instance fail its health check: probes catch it and it is replaced.
    victim = next(i for i in running() if i.pk != first.pk)
    requests.post(f"http://{victim.host}:{victim.port}/fault", json={"mode": "fail"}, timeout=2)
    failover = wait_for(lambda: AuditEntry.objects.filter(action="failover", payload__instance=victim.pk).first(),
                        timeout=30, message="fail-over of the failing instance")
    assert failover.actor == "system:monitor"
    assert failover.payload["evidence"]["probes"][0]["status"] == 503
    wait_for(lambda: Instance.objects.filter(service=svc, state="running", created_at__gt=failover.created_at)
             .exists(), timeout=30, message="a replacement")
    svc.refresh_from_db()
    assert 1 <= svc.desired_instances <= 3


# --- pages --------------------------------------------------------------------------------------------
@pytest.fixture
def fleet(db: None, personas) -> Service:
    svc = make_service("web", autoscale_enabled=True, min_instances=1, max_instances=4)
    now = timezone.now()
    probes(svc, now - timedelta(days=2), good=100, bad=1)  # budget overspent: scale-down is held
    probes(svc, now, good=100)
    actions.scale_service(svc, 2, actor="system:autoscaler", reason="test")
    from autoscaling import autoscaler as autoscale

    autoscale.evaluate(svc)
    return svc


PAGES = [
    # (method, url, persona, expected status)
    ("get", "/sla/", "anon", 302),
    ("get", "/sla/", "dave", 200),
    ("get", "/sla/", "bob", 200),
    ("get", "/services/web/sla/", "dave", 404),
    ("get", "/services/web/sla/", "bob", 200),
    ("get", "/services/web/autoscale/", "carol", 404),
    ("get", "/services/web/autoscale/", "bob", 200),
    ("post", "/services/web/maintenance/", "dave", 404),
    ("post", "/services/web/override/", "dave", 404),
    ("post", "/services/web/sla/settings/", "bob", 403),
    ("post", "/sla/channels/", "bob", 403),
    ("post", "/services/web/override/clear/", "bob", 302),
]


OBJECT_PAGES = [
    # {incident}, {window}, {channel} are filled in with real ids
    ("post", "/incidents/{incident}/ack/", "anon", 302),
    ("post", "/incidents/{incident}/ack/", "dave", 404),
    ("post", "/incidents/{incident}/ack/", "carol", 404),
    ("post", "/incidents/{incident}/ack/", "bob", 302),
    ("post", "/maintenance/{window}/end/", "dave", 404),
    ("post", "/maintenance/{window}/end/", "bob", 302),
    ("post", "/sla/channels/{channel}/delete/", "bob", 403),
    ("post", "/sla/channels/{channel}/delete/", "alice", 302),
    ("get", "/incidents/{incident}/ack/", "bob", 405),
]


@pytest.mark.parametrize(("method", "url", "who", "status"), PAGES)
def test_page_permissions(fleet: Service, clients, method: str, url: str, who: str, status: int) -> None:
    resp = getattr(clients[who], method)(url, {"instances": "2", "minutes": "5"} if method == "post" else None)
    assert resp.status_code == status


@pytest.mark.parametrize(("method", "url", "who", "status"), OBJECT_PAGES)
def test_object_page_permissions(fleet: Service, clients, method: str, url: str, who: str, status: int) -> None:
    now = timezone.now()
    ids = {
        "incident": slo_actions.open_incident(fleet, kind="latency", severity="page", title="t", evidence={}).pk,
        "window": health_actions.create_maintenance_window(fleet, starts_at=now, ends_at=now + timedelta(hours=1),
                                                    reason="", actor="system:test").pk,
        "channel": slo_actions.save_alert_channel(AlertChannel(name="c", kind="email", target="a@b.org"),
                                              actor="system:test").pk,
    }
    before = AuditEntry.objects.filter(outcome="success").count()
    resp = getattr(clients[who], method)(url.format(**ids))
    assert resp.status_code == status
    # Refusals change nothing (a 403 is audited as denied by the audit middleware); a success
    # writes exactly one audit entry.
    added = AuditEntry.objects.filter(outcome="success").count() - before
    assert added == (1 if status == 302 and who != "anon" else 0)


def test_the_overview_is_a_table_and_the_charts_are_on_the_service_page(fleet: Service, clients) -> None:
    body = clients["bob"].get("/sla/").content.decode()
    assert body.count('<tr data-service="web">') == 1 and body.count('class="spark"') == 1
    assert "Budget left (30 d)" in body and 'aria-label="daily uptime, last 90 days"' not in body
    body = clients["bob"].get("/services/web/sla/").content.decode()
    assert body.count('aria-label="daily uptime, last 90 days"') == 1
    assert body.count("<rect") > 90 + 24  # one bar per day and per hour, plus budget bars
    assert 'aria-label="latency p50 and p95"' in body and "<polyline" in body
    assert "Availability budget left" in body


def test_the_service_page_explains_the_instance_count(fleet: Service, clients) -> None:
    body = clients["alice"].get("/services/web/").content.decode()
    assert "Why 2 instances" in body and "latency_p95" in body and "ceil(" in body
    assert "scale-down held" in body  # what clipped the formula's 1 is named
    assert 'aria-label="timeline of scaling, fail-overs, incidents and runs"' in body
    assert "system:autoscaler: 0 → 2" in body  # the scale shows on the timeline with who did it


def test_an_incident_is_acknowledged_from_the_page(fleet: Service, clients) -> None:
    inc = slo_actions.open_incident(fleet, kind="latency", severity="page", title="slow", evidence={})
    assert clients["dave"].post(f"/incidents/{inc.pk}/ack/").status_code == 404
    assert f'action="/incidents/{inc.pk}/ack/"' in clients["bob"].get("/sla/").content.decode()
    assert clients["bob"].post(f"/incidents/{inc.pk}/ack/").status_code == 302
    inc.refresh_from_db()
    assert inc.status == "acknowledged" and inc.acknowledged_by == "bob"
    entry = AuditEntry.objects.get(action="incident.acknowledge")
    assert entry.actor == "bob"


def test_a_manual_override_from_the_page_pauses_the_autoscaler(fleet: Service, clients) -> None:
    from autoscaling import autoscaler as autoscale

    resp = clients["bob"].post("/services/web/override/", {"instances": "3", "ttl_minutes": "10"})
    assert resp.status_code == 302
    fleet.refresh_from_db()
    assert fleet.desired_instances == 3
    assert autoscale.evaluate(fleet).summary.startswith("paused: manual override by bob at 3")
    assert AuditEntry.objects.filter(action="autoscale.override", actor="bob").count() == 1


@pytest.mark.parametrize(("url", "data"), [
    ("/services/web/override/", {"instances": "-1"}),
    ("/services/web/override/", {"instances": "lots"}),
    ("/services/web/maintenance/", {"minutes": "0"}),
    ("/services/web/maintenance/", {"minutes": "30", "starts_at": "tomorrow"}),
    ("/services/web/sla/settings/", {"probe_interval_seconds": "0.2", "probe_timeout_seconds": "0.1"}),
    ("/services/web/sla/settings/", {"min_instances": "5", "max_instances": "2"}),
    ("/services/web/sla/settings/", {"failure_threshold": "many"}),
    ("/services/web/sla/settings/", {"burn_6h_severity": "sms"}),
    ("/services/web/sla/settings/", {"burn_1h_factor": "0"}),
    ("/services/web/sla/settings/", {"burn_3d_factor": "fast"}),
    ("/sla/channels/", {"name": "x", "kind": "webhook", "target": "not a url"}),
    ("/sla/channels/", {"name": "x", "kind": "pager", "target": "http://127.0.0.1/"}),
])
def test_bad_input_is_a_400_that_changes_nothing(fleet: Service, clients, url: str, data: dict) -> None:
    before = AuditEntry.objects.count()
    current = ServiceSettings(fleet).fields_dict()
    full = {f: current[f] for f in ("probe_interval_seconds", "probe_timeout_seconds", "failure_threshold",
                                    "success_threshold", "uptime_objective", "latency_objective_ms",
                                    "burn_1h_factor", "burn_1h_severity", "burn_6h_factor", "burn_6h_severity",
                                    "burn_3d_factor", "burn_3d_severity", "min_instances",
                                    "max_instances", "scale_up_max_step", "scale_down_max_step",
                                    "scale_up_stabilization_seconds", "scale_down_stabilization_seconds")}
    resp = clients["alice"].post(url, {**full, **data} if "settings" in url else data)
    assert resp.status_code == 400
    assert AuditEntry.objects.count() == before


def test_settings_saved_from_the_page_are_audited(fleet: Service, clients) -> None:
    data = {"probe_interval_seconds": "1", "probe_timeout_seconds": "0.5", "failure_threshold": "2",
            "success_threshold": "1", "uptime_objective": "99.5", "latency_objective_ms": "250",
            "burn_1h_factor": "14.4", "burn_1h_severity": "page", "burn_6h_factor": "5",
            "burn_6h_severity": "ticket", "burn_3d_factor": "1", "burn_3d_severity": "ticket",
            "autoscale_enabled": "on", "min_instances": "1", "max_instances": "6", "target_cpu_percent": "",
            "target_latency_ms": "", "target_demand_per_instance": "3", "scale_up_max_step": "2",
            "scale_down_max_step": "1", "scale_up_stabilization_seconds": "0",
            "scale_down_stabilization_seconds": "120"}
    assert clients["alice"].post("/services/web/sla/settings/", data).status_code == 302
    fleet.refresh_from_db()
    auto = fleet.autoscale_settings
    assert auto.max_instances == 6 and auto.target_cpu_percent is None and fleet.objectives.uptime_objective == 99.5
    entry = AuditEntry.objects.filter(action="service.update").order_by("-id").first()
    assert entry.payload["changes"]["max_instances"] == [4, 6]
    # The burn-rate pairs are part of the same form and the same one audit entry.
    assert fleet.objectives.burn_6h_factor == 5 and fleet.objectives.burn_6h_severity == "ticket"
    assert entry.payload["changes"]["burn_6h_severity"] == ["page", "ticket"]
    assert entry.payload["changes"]["burn_6h_factor"] == [6.0, 5.0]
    body = clients["alice"].get("/services/web/sla/").content.decode()
    assert '<select name="burn_6h_severity"><option value="page">page</option><option value="ticket" selected>' in body


# --- a real browser ---------------------------------------------------------------------------------
from tests.e2e.conftest import login  # noqa: E402


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_operator_sees_the_charts_and_acknowledges_from_the_page(live_server, page, personas) -> None:  # noqa: F811
    svc = make_service("web", autoscale_enabled=True)
    probes(svc, timezone.now(), good=80, bad=20)
    sla.evaluate(svc)  # opens a fast-burn incident
    actions.scale_service(svc, 2, actor="system:autoscaler")
    from autoscaling import autoscaler as autoscale

    autoscale.evaluate(svc)
    login(page, live_server, "bob", "pw-bob-123")
    page.goto(f"{live_server.url}/sla/")
    line = page.locator("tr[data-service='web']")
    assert line.locator(".badge").inner_text() == "burning fast"
    assert line.locator("svg.spark rect").count() == 24
    assert line.locator("svg.spark rect").last.get_attribute("fill") == "#cf222e"
    page.get_by_role("button", name="Acknowledge").click()
    page.get_by_text("acknowledged.").wait_for()
    assert Incident.objects.get(service=svc).acknowledged_by == "bob"
    page.get_by_role("link", name="web").first.click()
    page.wait_for_url("**/services/web/sla/")
    bars = page.locator("svg[aria-label='daily uptime, last 90 days'] rect")
    assert bars.count() == 90 and page.locator("svg[aria-label='latency p50 and p95'] polyline").count() == 2
    page.goto(f"{live_server.url}/services/web/")
    panel = page.locator("#autoscale-panel").inner_text()
    # No CPU or latency data, but the SLA burns fast: one more instance, and the page says why.
    assert "Why 3 instances" in panel and "SLA fast burn" in panel
    assert page.locator("svg[aria-label='timeline of scaling, fail-overs, incidents and runs'] circle").count() >= 1


# --- REST ------------------------------------------------------------------------------------------
def test_the_sla_api_gives_a_portal_what_the_page_shows(fleet: Service, clients, tokens) -> None:
    from tests.conftest import api

    slo_actions.open_incident(fleet, kind=Incident.Kind.AVAILABILITY, severity=Incident.Severity.PAGE,
                          title="web is down", evidence={})
    body = api(clients["anon"], "get", "/mgmt/services/web/sla", token=tokens["bob"]).json()
    assert body["service"] == "web" and body["uptimeObjectivePercent"] == 99.9
    assert body["windows"]["1h"]["probes"] == 100 and body["windows"]["1h"]["uptimePercent"] == 100.0
    assert body["windows"]["30d"]["probes"] == 201 and body["windows"]["30d"]["down"] == 1
    # One bad probe in 201 against a 0.1 % budget: overspent, as the page says.
    assert body["budgetLeft"]["availability"] == pytest.approx(1 - (1 / 201) / 0.001)
    assert body["maintenanceUntil"] is None
    assert [(i["title"], i["status"]) for i in body["incidents"]] == [("web is down", "open")]
    assert api(clients["anon"], "get", "/mgmt/services/web/sla", token=tokens["dave"]).status_code == 404
