"""Alertmanager channels against a real Prometheus Alertmanager (Debian's prometheus-alertmanager):
an incident opened by the SLO evaluation fires there with its labels, is repeated while open,
moves to its new severity when escalated, and is resolved there when the incident resolves, even
though its channel was disabled in between."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.utils import timezone

from audit.models import AuditEntry
from slo import actions as slo_actions
from slo import alerts, sla
from slo.forms import AlertChannelForm
from slo.models import AlertChannel, AlertDelivery, Incident
from tests.conftest import service_with
from tests.slo.test_sla import probes

BINARY = "/usr/bin/prometheus-alertmanager"
CONFIG = """\
route:
  receiver: "null"
receivers:
  - name: "null"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A throw-away Alertmanager on a free loopback port, stopped by its pid."""
    if not shutil.which(BINARY):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{BINARY} is missing (CI installs prometheus-alertmanager)")
        pytest.skip(f"{BINARY} is not installed (apt-get install prometheus-alertmanager)")
    (tmp_path / "am.yml").write_text(CONFIG)
    port = _free_port()
    log = (tmp_path / "am.log").open("wb")
    proc = subprocess.Popen(
        [BINARY, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"alertmanager did not start: {(tmp_path / 'am.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def am_alerts(url: str, incident: Incident, **params: str) -> list[dict]:
    resp = requests.get(f"{url}/api/v2/alerts", params=params, timeout=5)
    resp.raise_for_status()
    return [a for a in resp.json() if a["labels"].get("incident") == str(incident.pk)]


def deliver_all(incident: Incident, event: str) -> list[AlertDelivery]:
    out = []
    for d in AlertDelivery.objects.filter(incident=incident, event=event, status="pending"):
        assert alerts.deliver(d.pk) == "sent", d.last_error
        d.refresh_from_db()
        out.append(d)
    return out


@pytest.mark.timeout(60)
def test_an_incident_fires_repeats_and_resolves_in_alertmanager(db: None, alertmanager: str, settings) -> None:
    settings.HMS_PUBLIC_URL = "https://console.example.org"
    svc = service_with("shop")
    channel = slo_actions.save_alert_channel(
        AlertChannel(name="am", kind=AlertChannel.Kind.ALERTMANAGER, target=alertmanager + "/"), actor="system:test")
    now = timezone.now()
    probes(svc, now, good=80, bad=20)  # 200× the availability budget: the 1 h pair pages

    sla.evaluate(svc, now=now)
    inc = Incident.objects.get(service=svc)
    (sent,) = deliver_all(inc, "opened")
    assert sent.response_status == 200 and sent.attempts == 1
    assert AuditEntry.objects.filter(action="alert.sent", payload__kind="alertmanager").count() == 1

    (fired,) = am_alerts(alertmanager, inc, active="true")
    assert fired["labels"] == {"alertname": "HMSErrorBudgetBurn", "service": "shop", "slo": "availability",
                               "severity": "page", "incident": str(inc.pk)}
    assert fired["status"]["state"] == "active"
    assert fired["annotations"]["title"] == inc.title
    assert fired["annotations"]["console"] == "https://console.example.org/services/shop/sla/"
    assert fired["generatorURL"] == "https://console.example.org/services/shop/sla/"

    # Repeated while open: the monitor job queues one task per channel, the task posts it again.
    assert alerts.repeat_firing() == 1
    time.sleep(0.05)  # Alertmanager's updatedAt has millisecond resolution
    assert alerts.repeat(channel.pk) == "sent"
    (again,) = am_alerts(alertmanager, inc, active="true")
    assert again["updatedAt"] > fired["updatedAt"] and again["startsAt"] == fired["startsAt"]

    # Muted in between: no more repeats...
    channel.enabled = False
    slo_actions.save_alert_channel(channel, actor="system:test")
    assert alerts.repeat_firing() == 0 and alerts.repeat(channel.pk) == "skipped"
    # ...but the resolution still reaches it once six clean hours have cooled every pair.
    later = now + timedelta(hours=6, minutes=10)
    probes(svc, later, good=300)
    sla.evaluate(svc, now=later)
    inc.refresh_from_db()
    assert inc.status == "resolved"
    (resolved,) = deliver_all(inc, "resolved")
    assert resolved.channel_id == channel.pk and resolved.response_status == 200
    # Alertmanager lists only alerts that have not ended: the resolved one is gone, active or not.
    assert am_alerts(alertmanager, inc, active="true") == []
    assert am_alerts(alertmanager, inc) == []


@pytest.mark.timeout(60)
def test_an_escalated_incident_fires_once_at_its_new_severity(db: None, alertmanager: str) -> None:
    svc = service_with("shop", latency_objective_ms=200)
    slo_actions.save_alert_channel(AlertChannel(name="am", kind="alertmanager", target=alertmanager),
                                   actor="system:test")
    now = timezone.now()
    probes(svc, now, good=90, slow=10)  # 2× the latency budget: the 3-day pair, a ticket
    sla.evaluate(svc, now=now)
    inc = Incident.objects.get(service=svc)
    deliver_all(inc, "opened")
    assert [a["labels"]["severity"] for a in am_alerts(alertmanager, inc, active="true")] == ["ticket"]
    probes(svc, now, slow=400)
    sla.evaluate(svc, now=now)
    deliver_all(inc, "escalated")
    # The ticket's label set is ended, not left firing beside the page until resolve_timeout.
    (page,) = am_alerts(alertmanager, inc)
    assert page["labels"]["severity"] == "page" and page["labels"]["slo"] == "latency"
    assert page["status"]["state"] == "active"


def test_an_alertmanager_target_is_a_base_url(db: None) -> None:
    ok = AlertChannelForm({"name": "am", "kind": "alertmanager", "target": "http://127.0.0.1:9093"})
    assert ok.is_valid(), ok.errors
    for bad in ("127.0.0.1:9093", "ops@example.org", "http://am:9093/?x=1"):
        form = AlertChannelForm({"name": "am", "kind": "alertmanager", "target": bad})
        assert not form.is_valid() and "Alertmanager" in form.errors["target"][0]


def test_a_disabled_webhook_that_heard_the_incident_hears_it_end(db: None) -> None:
    svc = service_with("shop")
    hook = slo_actions.save_alert_channel(AlertChannel(name="hook", kind="webhook", target="http://127.0.0.1:9/"),
                                          actor="system:test")
    later = slo_actions.save_alert_channel(AlertChannel(name="late", kind="webhook", target="http://127.0.0.1:9/",
                                                        enabled=False), actor="system:test")
    inc = slo_actions.open_incident(svc, kind="availability", severity="page", title="t", evidence={})
    hook.enabled = False
    slo_actions.save_alert_channel(hook, actor="system:test")
    slo_actions.acknowledge_incident(inc, actor="bob")
    assert not AlertDelivery.objects.filter(event="acknowledged").exists()  # muted: no news...
    slo_actions.resolve_incident(inc, evidence={})
    # ...except the end; a disabled channel that never heard of it stays quiet.
    assert list(AlertDelivery.objects.filter(event="resolved").values_list("channel__name", flat=True)) == ["hook"]
    assert not AlertDelivery.objects.filter(channel=later).exists()
