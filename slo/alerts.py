"""Alert delivery: the django-q2 task that sends one queued delivery (webhook or e-mail), with
retries and back-off; the outcome is recorded by slo.actions.finish_alert_delivery."""

from __future__ import annotations

import time

import requests
from django.conf import settings
from django.core.mail import send_mail

from slo import actions
from slo.models import AlertChannel, AlertDelivery


def deliver(delivery_id: int) -> str:
    """django-q2 task: send one alert, retrying with backoff; the outcome is audited. A delivery
    already finished (the task ran twice) is left alone."""
    d = AlertDelivery.objects.select_related("channel", "incident__service").filter(pk=delivery_id).first()
    if d is None or d.status != AlertDelivery.Status.PENDING:
        return "skipped"
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
    if channel.kind == AlertChannel.Kind.WEBHOOK:
        try:
            resp = requests.post(channel.target, json=d.payload, timeout=settings.HMS_ALERT_TIMEOUT_SECONDS,
                                 headers={"User-Agent": "hmsmgmt-alerts/1", "X-HMS-Event": d.event})
        except requests.RequestException as exc:
            return False, None, str(exc)[:300]
        return 200 <= resp.status_code < 300, resp.status_code, "" if resp.ok else f"HTTP {resp.status_code}"
    p = d.payload
    subject = f"[hmsmgmt] {p.get('event', '')}: {p.get('title', '')}"[:200]
    body = "\n".join(f"{k}: {v}" for k, v in p.items())
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [channel.target], fail_silently=False)
    except Exception as exc:  # SMTP errors come in many classes
        return False, None, str(exc)[:300]
    return True, None, ""
