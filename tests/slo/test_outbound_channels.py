"""Alert channels and the outbound guard: a channel URL on a private address is refused when saved
(a 400 naming the target) and when sent (DNS can change after the save), delivery errors keep the
status and a short reason, never the response body; a webhook URL's secret parts never reach the
audit log or a page; a channel for a service you cannot see is a 404, a channel for every service
needs the global permission."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from guardian.shortcuts import assign_perm

from audit.models import AuditEntry
from fleet.models import Service
from slo import actions as slo_actions
from slo import alerts
from slo.models import AlertChannel, AlertDelivery, Incident
from tests.conftest import service_with
from tests.core.test_outbound import Server

SLACK = "https://93.184.215.14/services/T000/B000/XXXXSECRETXXXX?token=QUERYSECRET"


def _incident(svc: Service) -> Incident:
    return slo_actions.open_incident(svc, kind=Incident.Kind.AVAILABILITY, severity=Incident.Severity.PAGE,
                                     title="down", evidence={})


@pytest.mark.django_db
def test_a_channel_on_loopback_is_refused_at_send_time_and_says_so(settings) -> None:
    """Saved when the name still resolved elsewhere (here: written around the form), sent now."""
    settings.HMS_OUTBOUND_ALLOW = []
    settings.HMS_ALERT_ATTEMPTS, settings.HMS_ALERT_BACKOFF_SECONDS = 2, 0.01
    hook = Server()
    try:
        slo_actions.save_alert_channel(AlertChannel(name="ops", kind="webhook", target=hook.url), actor="system:test")
        inc = _incident(service_with("web"))
        assert alerts.deliver(AlertDelivery.objects.get(incident=inc).pk) == "failed"
    finally:
        hook.close()
    assert not hook.received
    d = AlertDelivery.objects.get(incident=inc)
    assert d.status == "failed" and d.last_error == "refused: private address (loopback)"
    entry = AuditEntry.objects.get(action="alert.failed")
    assert entry.payload["error"] == "refused: private address (loopback)"


@pytest.mark.django_db
def test_an_alertmanager_error_keeps_the_status_not_the_body(settings) -> None:
    settings.HMS_ALERT_ATTEMPTS, settings.HMS_ALERT_BACKOFF_SECONDS = 1, 0.01
    am = Server(status=500, body=b"SECRET-BODY-TEXT from whatever answered")
    try:
        slo_actions.save_alert_channel(AlertChannel(name="am", kind="alertmanager", target=am.url.rsplit("/", 1)[0]),
                                       actor="system:test")
        inc = _incident(service_with("web"))
        assert alerts.deliver(AlertDelivery.objects.get(incident=inc).pk) == "failed"
    finally:
        am.close()
    assert am.received and am.received[0]["path"] == "/api/v2/alerts"
    d = AlertDelivery.objects.get(incident=inc)
    assert d.response_status == 500 and d.last_error == "HTTP 500 Internal Server Error"
    assert "SECRET" not in str(AuditEntry.objects.get(action="alert.failed").payload)


@pytest.mark.django_db
def test_a_redirect_from_an_allowed_receiver_is_not_followed(settings) -> None:
    settings.HMS_ALERT_ATTEMPTS, settings.HMS_ALERT_BACKOFF_SECONDS = 1, 0.01
    inner = Server(host="127.0.0.2")
    outer = Server(status=302, location=inner.url)
    try:
        slo_actions.save_alert_channel(AlertChannel(name="ops", kind="webhook", target=outer.url), actor="system:test")
        inc = _incident(service_with("web"))
        assert alerts.deliver(AlertDelivery.objects.get(incident=inc).pk) == "failed"
    finally:
        inner.close()
        outer.close()
    assert outer.received and not inner.received
    assert AlertDelivery.objects.get(incident=inc).last_error == "HTTP 302 Found: redirect not followed"


# --- the channel page ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_private_target_is_a_400_naming_the_field(clients, settings) -> None:
    settings.HMS_OUTBOUND_ALLOW = []
    for kind, target in (("webhook", "http://127.0.0.1:9/hook"), ("alertmanager", "http://169.254.169.254"),
                         ("webhook", "http://[::ffff:10.0.0.1]/x"), ("alertmanager", "http://localhost:9093")):
        r = clients["alice"].post("/sla/channels/", {"name": "x", "kind": kind, "target": target})
        assert r.status_code == 400, (target, r.status_code)
        assert b"target: The target URL is refused: private address" in r.content, target
    assert not AlertChannel.objects.exists() and not AuditEntry.objects.filter(action__startswith="alert_channel")
    settings.HMS_OUTBOUND_ALLOW = ["127.0.0.1"]
    assert clients["alice"].post("/sla/channels/", {"name": "x", "kind": "webhook",
                                                    "target": "http://127.0.0.1:9/hook"}).status_code == 302


@pytest.mark.django_db
def test_a_webhook_token_never_reaches_the_audit_log_or_the_page(clients) -> None:
    r = clients["alice"].post("/sla/channels/", {"name": "slack", "kind": "webhook", "target": "https://ops:PW@"
                                                 + SLACK.removeprefix("https://")})
    assert r.status_code == 302
    assert AlertChannel.objects.get().target.endswith("XXXXSECRETXXXX?token=QUERYSECRET")  # kept to send to
    entry = AuditEntry.objects.get(action="alert_channel.create")
    assert entry.payload["target"] == "https://93.184.215.14/services/…?…"
    page = clients["alice"].get("/sla/").content.decode()
    assert "https://93.184.215.14/services/…?…" in page
    for secret in ("XXXXSECRETXXXX", "QUERYSECRET", "T000", "PW"):
        assert secret not in str(entry.payload) and secret not in page
    admin = clients["alice"].get(f"/admin/slo/alertchannel/{AlertChannel.objects.get().pk}/change/").content.decode()
    assert "XXXXSECRETXXXX" not in admin and "QUERYSECRET" not in admin


@pytest.fixture
def erin(db, demo) -> Client:
    """May add, view and delete channels, and sees HMS-SVC only."""
    user = User.objects.create_user("erin", "erin@example.org", "pw-erin-123")
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="slo", codename__in=["add_alertchannel", "view_alertchannel", "delete_alertchannel"]))
    assign_perm("fleet.view_service", user, Service.objects.get(name="HMS-SVC"))
    c = Client()
    c.force_login(user)
    return c


def test_a_channel_for_an_unseen_service_is_a_404_and_a_global_one_needs_the_global_permission(
        erin: Client, clients) -> None:
    unseen = Service.objects.exclude(name="HMS-SVC").first()
    assert unseen is not None
    body = {"name": "mine", "kind": "webhook", "target": SLACK}
    # Before: an unseen service made the channel global (every service's incidents to her URL).
    assert erin.post("/sla/channels/", body | {"service": unseen.name}).status_code == 404
    assert erin.post("/sla/channels/", body | {"service": "no-such-service"}).status_code == 404
    assert clients["dave"].post("/sla/channels/", body | {"service": unseen.name}).status_code == 404
    assert erin.post("/sla/channels/", body).status_code == 403  # every service: not hers to hear
    assert not AlertChannel.objects.exists()
    assert erin.post("/sla/channels/", body | {"service": "HMS-SVC"}).status_code == 302
    assert AlertChannel.objects.get().service.name == "HMS-SVC"
    # An admin may add one for every service; erin's list shows it and hers, not another team's.
    assert clients["alice"].post("/sla/channels/", body | {"name": "all"}).status_code == 302
    theirs = slo_actions.save_alert_channel(AlertChannel(name="theirs", kind="email", target="t@example.org",
                                                         service=unseen), actor="system:test")
    page = erin.get("/sla/").content.decode()
    assert ">mine<" in page and ">all<" in page and ">theirs<" not in page
    assert erin.post(f"/sla/channels/{theirs.pk}/delete/").status_code == 404
    assert AlertChannel.objects.filter(pk=theirs.pk).exists()
