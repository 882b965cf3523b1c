"""Alert delivery: the django-q2 task that sends one queued delivery (webhook, e-mail or
Prometheus Alertmanager), with retries and back-off; the outcome is recorded by
slo.actions.finish_alert_delivery. Alertmanager also wants every firing alert repeated (it
resolves one nobody repeats after its resolve_timeout): repeat_firing, a monitor job, queues one
repeat task per Alertmanager channel."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from core import outbound
from slo import actions
from slo.models import AlertChannel, AlertDelivery, Incident

log = logging.getLogger(__name__)
ALERTNAME = "HMSErrorBudgetBurn"
DEADLINE_ALERTNAME = "HMSRunDeadlineMissed"


def deliver(delivery_id: int) -> str:
    """django-q2 task: send one alert, retrying with backoff; the outcome is audited. A delivery
    already finished (the task ran twice) is left alone."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.HMS_ALERT_RESEND_SECONDS)
    claimed = AlertDelivery.objects.filter(pk=delivery_id, status=AlertDelivery.Status.PENDING).filter(
        Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale)).update(claimed_at=now)
    if not claimed:
        return "skipped"  # finished already, or another worker is sending it right now
    d = AlertDelivery.objects.select_related("channel", "incident__service").get(pk=delivery_id)
    attempts = settings.HMS_ALERT_ATTEMPTS
    backoff = settings.HMS_ALERT_BACKOFF_SECONDS
    status: int | None = None
    error = ""
    for attempt in range(1, attempts + 1):
        ok, status, error = _send(d)
        if ok:
            actions.finish_alert_delivery(d, sent=True, attempts=attempt, response_status=status)
            return "sent"
        if attempt < attempts:
            time.sleep(backoff * 2 ** (attempt - 1))
    actions.finish_alert_delivery(d, sent=False, attempts=attempts, response_status=status, error=error)
    return "failed"


def _send(d: AlertDelivery) -> tuple[bool, int | None, str]:
    channel: AlertChannel = d.channel
    if channel.kind == AlertChannel.Kind.ALERTMANAGER:
        # Built from the incident as it is now, not from the queued payload: an "opened" delivery
        # retried after the incident resolved must not make Alertmanager fire it again.
        return _post_alertmanager(channel, alertmanager_alerts(d.incident, now=timezone.now()))
    if channel.kind == AlertChannel.Kind.WEBHOOK:
        # Through the outbound guard, checked again now (DNS may have changed since the save).
        res = outbound.post_json(channel.target, d.payload, timeout=settings.HMS_ALERT_TIMEOUT_SECONDS,
                                 headers={"User-Agent": "hmsmgmt-alerts/1", "X-HMS-Event": d.event})
        return res.ok, res.status, res.error
    p = d.payload
    subject = f"[hmsmgmt] {p.get('event', '')}: {p.get('title', '')}"[:200]
    body = "\n".join(f"{k}: {v}" for k, v in p.items())
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [channel.target], fail_silently=False)
    except Exception as exc:  # SMTP errors come in many classes
        return False, None, str(exc)[:300]
    return True, None, ""


# --- Prometheus Alertmanager -------------------------------------------------------------------------
def alertmanager_alerts(incident: Incident, *, now: datetime) -> list[dict[str, Any]]:
    """The incident as Alertmanager API v2 alerts: one with its current severity (endsAt once
    resolved) and, if it was escalated, the label set it fired with before, ended now: Alertmanager
    tells alerts apart by their labels, so a changed severity label is a new alert and the old one
    would stay firing until its resolve_timeout."""
    resolved = incident.status == Incident.Status.RESOLVED
    out = [_am_alert(incident, incident.severity, incident.resolved_at if resolved else None)]
    if "escalation" in incident.evidence:
        out += [_am_alert(incident, sev, incident.resolved_at or now) for sev in Incident.Severity.values
                if sev != incident.severity]
    return out


def _am_alert(incident: Incident, severity: str, ends_at: datetime | None) -> dict[str, Any]:
    if incident.service_id is not None:
        link = f"{settings.HMS_PUBLIC_URL}/services/{quote(incident.service.name)}/sla/"
        labels = {"alertname": ALERTNAME, "service": incident.service.name}
    else:  # a run's missed deadline
        link = f"{settings.HMS_PUBLIC_URL}/runs/{incident.run_id}/"
        labels = {"alertname": DEADLINE_ALERTNAME, "flow": incident.flow_slug, "run": str(incident.run_id)}
    alert: dict[str, Any] = {
        "labels": {**labels, "slo": incident.kind, "severity": severity, "incident": str(incident.pk)},
        "annotations": {"title": incident.title, "summary": incident.title, "console": link},
        "startsAt": incident.opened_at.isoformat(),
        "generatorURL": link,
    }
    if ends_at is not None:
        alert["endsAt"] = ends_at.isoformat()
    return alert


def _post_alertmanager(channel: AlertChannel, alerts: list[dict[str, Any]]) -> tuple[bool, int | None, str]:
    url = channel.target.rstrip("/") + "/api/v2/alerts"
    # Status code and reason only: the response body is the far end's text (an internal service
    # reached by mistake would otherwise have its answer shown on the console's pages).
    res = outbound.post_json(url, alerts, timeout=settings.HMS_ALERT_TIMEOUT_SECONDS,
                             headers={"User-Agent": "hmsmgmt-alerts/1"})
    return res.ok, res.status, res.error


def _firing_for(channel: AlertChannel) -> Any:
    scope = Q() if channel.service_id is None else Q(service_id=channel.service_id)
    return Incident.objects.filter(scope, status__in=Incident.ACTIVE).select_related("service")


def repeat_firing() -> int:
    """Monitor job (every HMS_ALERTMANAGER_REPEAT_SECONDS): one repeat task per enabled
    Alertmanager channel with an active incident to repeat. Two queries whatever the fleet; the
    posting happens on the workers, so a slow Alertmanager never holds up the SLO evaluation."""
    channels = list(AlertChannel.objects.filter(kind=AlertChannel.Kind.ALERTMANAGER, enabled=True))
    if not channels:
        return 0
    services = set(Incident.objects.filter(status__in=Incident.ACTIVE).values_list("service_id", flat=True))
    due = [c.pk for c in channels if services and (c.service_id is None or c.service_id in services)]
    for channel_id in due:
        async_task("slo.alerts.repeat", channel_id, group="alerts", cluster=settings.HMS_ALERT_CLUSTER)
    return len(due)


def repeat(channel_id: int) -> str:
    """django-q2 task: post every active incident of the channel again, in one request. One
    attempt (the next period is the retry); neither stored nor audited, as it only repeats what
    the audited "opened" delivery said. A channel disabled or deleted since is left alone."""
    channel = AlertChannel.objects.filter(pk=channel_id, enabled=True, kind=AlertChannel.Kind.ALERTMANAGER).first()
    if channel is None:
        return "skipped"
    now = timezone.now()
    alerts = [a for inc in _firing_for(channel) for a in alertmanager_alerts(inc, now=now)]
    if not alerts:
        return "nothing firing"
    ok, status, error = _post_alertmanager(channel, alerts)
    if not ok:
        log.warning("repeating %d alerts to Alertmanager channel %s failed: %s", len(alerts), channel.name,
                    error or status)
        return "failed"
    return "sent"


def resend_stranded(now: datetime | None = None) -> int:
    """The controller's job: deliveries still pending HMS_ALERT_RESEND_SECONDS after they were
    written or last claimed lost their task (a worker killed, a queue lost); queue them again.
    `deliver` claims before sending, so a delivery whose task was only slow is not sent twice."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.HMS_ALERT_RESEND_SECONDS)
    ids = list(AlertDelivery.objects.filter(status=AlertDelivery.Status.PENDING).filter(
        Q(claimed_at__lt=stale) | Q(claimed_at__isnull=True, created_at__lt=stale)).values_list("pk", flat=True)[:500])
    if ids:
        log.warning("re-sending %d alert deliveries left pending", len(ids))
        actions.enqueue_deliveries(ids)
    return len(ids)
