"""Domain actions of slo: incidents (open, acknowledge, escalate, resolve), the alerts they queue,
and alert channels. Each writes its audit entry in the same transaction; alerts are sent by
slo.alerts after commit."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from audit import events
from audit.actions import actor_label, record
from audit.models import AuditEntry
from core import outbound
from core.rows import apply_fields
from fleet.models import Service
from slo.models import AlertChannel, AlertDelivery, Incident, Objectives


def open_incident(service: Service | None, *, kind: str, severity: str, title: str, evidence: dict[str, Any],
                  actor: Any = "system:sla", flow_slug: str = "", run_id: int | None = None) -> Any:
    """Open an incident and queue one alert per matching channel (sent after commit). A service's
    incident (burn rates) or, with service=None, a flow run's (a missed deadline: flow_slug and
    run_id name it; the channels for every service hear it)."""

    with transaction.atomic():
        incident = Incident.objects.create(service=service, kind=kind, severity=severity, title=title[:200],
                                           evidence=evidence, opened_at=timezone.now(), flow_slug=flow_slug,
                                           run_id=run_id)
        deliveries = _queue_alerts(incident, "opened")
        payload = {"incident": incident.pk, "kind": kind, "severity": severity, "title": incident.title,
                   "evidence": evidence, "alerts": len(deliveries)}
        if service is None:
            payload |= {"flowId": flow_slug, "runId": run_id}
        record(events.INCIDENT_OPEN, actor=actor, target=_target(incident), payload=payload)
    return incident


def _target(incident: Incident) -> Any:
    """Whose history an incident's entries belong to: its service's, or (a run's deadline) its own."""
    return incident.service if incident.service_id is not None else incident


def acknowledge_incident(incident: Any, *, actor: Any) -> bool:

    with transaction.atomic():
        inc = Incident.objects.select_for_update().get(pk=incident.pk)
        if inc.status != Incident.Status.OPEN:
            return False
        inc.status = Incident.Status.ACKNOWLEDGED
        inc.acknowledged_at = timezone.now()
        inc.acknowledged_by = actor_label(actor)[0][:150]
        inc.save(update_fields=["status", "acknowledged_at", "acknowledged_by"])
        deliveries = _queue_alerts(inc, "acknowledged")
        record(events.INCIDENT_ACKNOWLEDGE, actor=actor, target=_target(inc),
               payload={"incident": inc.pk, "title": inc.title, "alerts": len(deliveries)})
    return True


def resolve_incident(incident: Any, *, evidence: dict[str, Any], actor: Any = "system:sla") -> bool:

    with transaction.atomic():
        inc = Incident.objects.select_for_update().get(pk=incident.pk)
        if inc.status not in Incident.ACTIVE:
            return False
        inc.status = Incident.Status.RESOLVED
        inc.resolved_at = timezone.now()
        inc.save(update_fields=["status", "resolved_at"])
        deliveries = _queue_alerts(inc, "resolved")
        record(events.INCIDENT_RESOLVE, actor=actor, target=_target(inc),
               payload={"incident": inc.pk, "title": inc.title, "evidence": evidence,
                        "open_seconds": round((inc.resolved_at - inc.opened_at).total_seconds(), 1),
                        "alerts": len(deliveries)})
    return True


def enqueue_deliveries(ids: list[int]) -> None:
    """One django-q2 task per delivery (slo.alerts.deliver, named by path: the task module
    imports this one)."""
    for delivery_id in ids:
        async_task("slo.alerts.deliver", delivery_id, group="alerts", cluster=settings.HMS_ALERT_CLUSTER)


def _queue_alerts(incident: Any, event: str) -> list[int]:
    matching = Q(service__isnull=True) | (Q(service=incident.service_id) if incident.service_id else Q(pk__in=[]))
    if event == "resolved":
        # The end of an incident always reaches every channel that heard of it, even one disabled
        # since (no one should be left with an alert that never ends), and every matching
        # Alertmanager channel: it may hold the alert from a repeat alone, and an alert not
        # resolved there keeps firing until Alertmanager's resolve_timeout.
        heard = Q(pk__in=AlertDelivery.objects.filter(incident=incident).values("channel_id"))
        channels = AlertChannel.objects.filter(
            (matching & (Q(enabled=True) | Q(kind=AlertChannel.Kind.ALERTMANAGER))) | heard)
    else:
        channels = AlertChannel.objects.filter(matching, enabled=True)
    payload = {
        "event": event,
        "incident": incident.pk,
        "service": incident.service.name if incident.service_id else None,
        "kind": incident.kind,
        "severity": incident.severity,
        "status": incident.status,
        "title": incident.title,
        "openedAt": incident.opened_at.isoformat(),
        "evidence": incident.evidence,
    }
    if incident.service_id is None:
        payload |= {"flowId": incident.flow_slug, "runId": incident.run_id}
    ids = [AlertDelivery.objects.create(incident=incident, channel=c, event=event, payload=payload).pk
           for c in channels]
    if ids:
        transaction.on_commit(lambda: enqueue_deliveries(ids))
    return ids


def finish_alert_delivery(delivery: Any, *, sent: bool, attempts: int, response_status: int | None,
                          error: str = "") -> None:
    """The outcome of a webhook/email delivery after its retries."""

    with transaction.atomic():
        d = AlertDelivery.objects.select_for_update().select_related("channel", "incident").get(pk=delivery.pk)
        if d.status != AlertDelivery.Status.PENDING:
            return  # another worker finished it first
        d.status = AlertDelivery.Status.SENT if sent else AlertDelivery.Status.FAILED
        d.attempts, d.response_status, d.last_error = attempts, response_status, error[:300]
        d.sent_at = timezone.now() if sent else None
        d.save(update_fields=["status", "attempts", "response_status", "last_error", "sent_at"])
        record(events.ALERT_SENT if sent else "alert.failed", actor="system:alerts", target=_target(d.incident),
               outcome=AuditEntry.Outcome.SUCCESS if sent else AuditEntry.Outcome.ERROR,
               payload={"incident": d.incident_id, "event": d.event, "channel": d.channel.name,
                        "kind": d.channel.kind, "attempts": attempts, "status": response_status,
                        "error": error[:300]})


def save_alert_channel(channel: Any, *, actor: Any) -> Any:
    created = channel.pk is None
    with transaction.atomic():
        channel.save()
        # The target redacted: a webhook URL's path, query and user-info are its credentials.
        record(events.ALERT_CHANNEL_CREATE if created else "alert_channel.update", actor=actor, target=channel,
               payload={"name": channel.name, "kind": channel.kind,
                        "target": outbound.redact_target(channel.kind, channel.target),
                        "service": channel.service.name if channel.service_id else None})
    return channel


def delete_alert_channel(channel: Any, *, actor: Any) -> None:
    with transaction.atomic():
        record(events.ALERT_CHANNEL_DELETE, actor=actor, target=channel, payload={"name": channel.name})
        channel.delete()




def escalate_incident(incident: Any, *, severity: str, evidence: dict[str, Any], actor: Any = "system:sla") -> bool:
    """A slow burn (ticket) that turns into a fast burn (page) is the same incident, louder."""

    with transaction.atomic():
        inc = Incident.objects.select_for_update().get(pk=incident.pk)
        if inc.status not in Incident.ACTIVE or inc.severity == severity:
            return False
        before = inc.severity
        inc.severity = severity
        inc.evidence = {**inc.evidence, "escalation": evidence}
        inc.save(update_fields=["severity", "evidence"])
        deliveries = _queue_alerts(inc, "escalated")
        record(events.INCIDENT_ESCALATE, actor=actor, target=_target(inc),
               payload={"incident": inc.pk, "from": before, "to": severity, "evidence": evidence,
                        "alerts": len(deliveries)})
    return True


def apply_settings(service: Service, changes: dict[str, Any]) -> dict[str, list[Any]]:
    """The service's Objectives fields, changed inside the caller's transaction (console.actions
    audits a whole settings form as one change)."""
    return apply_fields(Objectives, service.pk, changes)


def update_settings(service: Service, changes: dict[str, Any], *, actor: Any) -> dict[str, list[Any]]:
    """apply_settings() as its own audited change (admin edits one part)."""
    with transaction.atomic():
        diff = apply_settings(service, changes)
        record(events.SERVICE_UPDATE, actor=actor, target=service, payload={"changes": diff})
    return diff
