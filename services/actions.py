"""Domain actions of the services app. Pages, the REST API, admin and the controller call these;
nothing else writes Service or Instance state. Each administrative change writes its audit entry
in the same transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit.actions import record
from audit.models import AuditEntry
from policies.enforce import Decision, enforce
from policies.models import Policy
from services.drivers import get_driver
from services.locks import LockTimeout, service_lock
from services.models import Instance, Service

SPEC_FIELDS = ("driver", "command", "image", "port", "health_path")
log = logging.getLogger("hmsmgmt.services")
EARLY_DEATH = timedelta(seconds=10)  # an instance dying younger than this counts toward a crash loop
MAX_BACKOFF_SECONDS = 60


@dataclass
class ScaleOutcome:
    service: Service
    previous: int
    requested: int
    decision: Decision
    dry_run: bool = False

    @property
    def applied(self) -> bool:
        return self.decision.allowed and not self.dry_run


class _RowMoved(Exception):
    """The service row no longer holds the state a scale decision was made on."""


def count_error(instances: Any) -> str | None:
    """Why a requested instance count is unacceptable whatever the policies say, or None. The
    one ceiling every entry point shares (the API's schema uses the same setting)."""
    if not isinstance(instances, int) or isinstance(instances, bool) or instances < 0:
        return "Instances must be a whole number, 0 or more."
    if instances > settings.HMS_MAX_INSTANCES:
        return f"Instances must be at most {settings.HMS_MAX_INSTANCES} (HMS_MAX_INSTANCES)."
    return None


def scale_service(
    service: Service, instances: int, *, actor: Any, dry_run: bool = False, reason: str = ""
) -> ScaleOutcome:
    """Set the desired instance count (the source of truth); the reconciler converges to it.

    A refusal by policy is audited as denied and committed; the caller turns it into a 4xx.
    Callers check count_error() first; a count outside it is a programming error here.

    Optimistic first: the caller has just read `service` (the API and the pages fetch it through
    the permission choke point), so the policies judge that state and the UPDATE applies only if
    the row still holds it: one statement instead of a locked re-read plus an update on the hot
    path. If someone scaled in between (or the decision is a refusal, which deserves the freshest
    state before it is recorded) it decides again on the row read under FOR UPDATE.
    """
    if (problem := count_error(instances)) is not None:
        raise ValueError(problem)
    svc = service
    for locked in (False, True):
        try:
            with transaction.atomic():
                if locked:
                    svc = Service.objects.select_for_update().get(pk=service.pk)
                decision = enforce(
                    actor,
                    "scale",
                    svc,
                    lock=not dry_run,
                    service=svc.name,
                    current=svc.desired_instances,
                    requested=instances,
                    last_scaled_at=svc.last_scaled_at,
                )
                outcome = ScaleOutcome(svc, svc.desired_instances, instances, decision, dry_run)
                if dry_run:
                    return outcome
                payload: dict[str, Any] = {"from": svc.desired_instances, "to": instances}
                if reason:
                    payload["reason"] = reason
                if not decision.allowed:
                    if not locked:
                        raise _RowMoved  # judge a refusal again on the freshest state before recording it
                    record("scale", actor=actor, target=svc, outcome=AuditEntry.Outcome.DENIED,
                           payload={**payload, "decision": decision.as_dict()})
                    return outcome
                now = timezone.now()
                # The row must still hold what the decision and the entry ("from") rest on: the
                # count, and the last scaling time only when a cooldown was judged (otherwise
                # concurrent re-asserts of one count would all fall back to the locked pass).
                unchanged = Service.objects.filter(pk=svc.pk, name=svc.name, desired_instances=svc.desired_instances)
                if Policy.Kind.SCALING_RATE in decision.checked_kinds:
                    unchanged = unchanged.filter(last_scaled_at=svc.last_scaled_at)
                if not unchanged.update(desired_instances=instances, last_scaled_at=now):
                    raise _RowMoved
                # The entry after the UPDATE, under the row lock it took: entries of one service are
                # then numbered in the order their changes commit, so each "from" is the "to" of
                # the entry before it. (Written first, a re-assert that committed earlier could be
                # sealed after a change that committed later.)
                record("scale", actor=actor, target=svc, payload=payload)
                svc.desired_instances, svc.last_scaled_at = instances, now
                return outcome
        except _RowMoved:
            continue
    raise AssertionError("unreachable: the locked pass always decides")  # pragma: no cover


def save_service(service: Service, *, actor: Any, created: bool, before: dict[str, Any] | None = None) -> Service:
    """Create or update a service definition (admin). A change of driver or spec bumps
    spec_version, which makes the reconciler roll instances over one at a time."""
    with transaction.atomic():
        diff: dict[str, list[Any]] = {}
        if not created and before is not None:
            for name, old in before.items():
                new = getattr(service, name)
                if old != new:
                    diff[name] = [old, new]
        if created:
            service.save()
        elif diff:
            # Write only what changed: a stale object must not reset desired_instances (which
            # only scale_service writes) or anything else it did not mean to touch.
            service.save(update_fields=list(diff))
            if any(name in diff for name in SPEC_FIELDS):
                Service.objects.filter(pk=service.pk).update(spec_version=F("spec_version") + 1)
                service.spec_version = Service.objects.values_list("spec_version", flat=True).get(pk=service.pk)
        record(
            "service.create" if created else "service.update",
            actor=actor,
            target=service,
            payload={"changes": diff} if not created else {"name": service.name, "driver": service.driver},
        )
    return service


def delete_service(service: Service, *, actor: Any) -> None:
    """Delete the definition and, once that commits, what it runs on its engines: an operator who
    deletes a service expects its processes, containers or Swarm service gone, not orphaned.

    Engine removal is best effort: an unreachable engine is logged, and what is left carries the
    console's labels (`docker ps --filter label=hmsmgmt.service=NAME` finds it). It runs under the
    service's converge lock, so a converge in flight cannot start an instance after the removal."""
    drivers = {service.driver} | set(
        service.instances.filter(state__in=Instance.LIVE_STATES).values_list("driver", flat=True)
    )
    spec = service.spec()
    with transaction.atomic():
        record("service.delete", actor=actor, target=service,
               payload={"name": service.name, "engines": sorted(drivers)})
        service.delete()
        transaction.on_commit(lambda: remove_engine_objects(spec, drivers))


def remove_engine_objects(spec: Any, drivers: set[str]) -> list[str]:
    """Stop everything a (deleted) service runs on the given drivers; returns the drivers that
    could not be reached."""
    failed = []
    try:
        with service_lock(spec.name, timeout=settings.HMS_SCALE_WAIT_SECONDS):
            for name in sorted(drivers):
                try:
                    get_driver(name).remove_service(spec)
                except Exception as exc:  # best effort: an engine error must not undo the delete
                    log.warning("could not remove %s's %s instances: %s", spec.name, name, exc)
                    failed.append(name)
    except LockTimeout:
        log.warning("could not remove %s's instances: a converge still holds the service", spec.name)
        failed = sorted(drivers)
    return failed


def record_failover(instance: Instance, *, cause: str, component: str) -> None:
    """An instance died without being asked to: mark it exited, count toward crash-loop backoff,
    and audit the fail-over (the reconciler starts the replacement)."""
    now = timezone.now()
    with transaction.atomic():
        inst = Instance.objects.select_for_update().get(pk=instance.pk)
        if inst.state not in Instance.LIVE_STATES:
            return  # someone else already handled it
        inst.state = Instance.State.EXITED
        inst.health = Instance.Health.DOWN
        inst.exit_reason = cause[:300]
        inst.stopped_at = now
        inst.save(update_fields=["state", "health", "exit_reason", "stopped_at"])
        svc = Service.objects.select_for_update().get(pk=inst.service_id)
        lived = now - (inst.started_at or inst.created_at)
        if lived < EARLY_DEATH:
            svc.failure_streak += 1
            if svc.failure_streak >= 2:
                delay = min(2 ** (svc.failure_streak - 1), MAX_BACKOFF_SECONDS)
                svc.backoff_until = now + timedelta(seconds=delay)
        else:
            svc.failure_streak = 0
            svc.backoff_until = None
        svc.save(update_fields=["failure_streak", "backoff_until"])
        record(
            "failover",
            actor=f"system:{component}",
            target=svc,
            payload={
                "instance": inst.pk,
                "ref": inst.ref,
                "cause": cause,
                "lived_seconds": round(lived.total_seconds(), 1),
                "failure_streak": svc.failure_streak,
                "backoff_until": svc.backoff_until.isoformat() if svc.backoff_until else None,
            },
        )


# --- SLA monitoring, incidents, alerts, autoscaler overrides (issue 5) ---------------------------
# Observations (probe results, roll-ups, autoscaler decisions) are measured data, not
# administrative changes, and are not audited; everything below changes what the console does or
# tells people, so each writes its one audit entry in the same transaction.


def fail_over_unhealthy(instance: Instance, *, evidence: dict[str, Any], component: str = "monitor") -> bool:
    """An instance failed its probe threshold: mark it exited, audit `failover` with the probe
    evidence, then stop it through its driver. The reconciler sees live < desired and starts a
    replacement. Safe to call twice: the second call finds it no longer live and does nothing."""
    from services.drivers import get_driver
    from services.models import MaintenanceWindow

    now = timezone.now()
    with transaction.atomic():
        inst = Instance.objects.select_for_update().get(pk=instance.pk)
        if inst.state not in Instance.LIVE_STATES:
            return False  # already handled (by another batch or by the reconciler)
        svc = Service.objects.get(pk=inst.service_id)
        if MaintenanceWindow.objects.filter(service=svc, starts_at__lte=now, ends_at__gt=now).exists():
            return False  # maintenance pauses fail-over
        cause = f"health probe failed {evidence.get('consecutive_failures', '?')} times in a row"
        inst.state = Instance.State.EXITED
        inst.health = Instance.Health.DOWN
        inst.exit_reason = cause[:300]
        inst.stopped_at = now
        inst.save(update_fields=["state", "health", "exit_reason", "stopped_at"])
        record(
            "failover",
            actor=f"system:{component}",
            target=svc,
            payload={"instance": inst.pk, "ref": inst.ref, "cause": cause, "evidence": evidence,
                     "lived_seconds": round((now - (inst.started_at or inst.created_at)).total_seconds(), 1)},
        )
    # Outside the transaction: an engine call may be slow, and the row already says "exited".
    if inst.ref:
        try:
            get_driver(inst.driver).stop_instance(svc.spec(), inst.ref, grace_seconds=1.0)
        except Exception:  # the reconciler stops leftovers as orphans on its next tick
            pass
    return True


def open_incident(service: Service, *, kind: str, severity: str, title: str, evidence: dict[str, Any],
                  actor: Any = "system:sla") -> Any:
    """Open an incident and queue one alert per matching channel (sent after commit)."""
    from services.models import AlertChannel, AlertDelivery, Incident

    with transaction.atomic():
        incident = Incident.objects.create(service=service, kind=kind, severity=severity, title=title[:200],
                                           evidence=evidence, opened_at=timezone.now())
        deliveries = _queue_alerts(incident, "opened", AlertChannel, AlertDelivery)
        record("incident.open", actor=actor, target=service,
               payload={"incident": incident.pk, "kind": kind, "severity": severity, "title": incident.title,
                        "evidence": evidence, "alerts": len(deliveries)})
    return incident


def acknowledge_incident(incident: Any, *, actor: Any) -> bool:
    from services.models import AlertChannel, AlertDelivery, Incident

    with transaction.atomic():
        inc = Incident.objects.select_for_update().get(pk=incident.pk)
        if inc.status != Incident.Status.OPEN:
            return False
        inc.status = Incident.Status.ACKNOWLEDGED
        inc.acknowledged_at = timezone.now()
        from audit.actions import actor_label

        inc.acknowledged_by = actor_label(actor)[0][:150]
        inc.save(update_fields=["status", "acknowledged_at", "acknowledged_by"])
        deliveries = _queue_alerts(inc, "acknowledged", AlertChannel, AlertDelivery)
        record("incident.acknowledge", actor=actor, target=inc.service,
               payload={"incident": inc.pk, "title": inc.title, "alerts": len(deliveries)})
    return True


def resolve_incident(incident: Any, *, evidence: dict[str, Any], actor: Any = "system:sla") -> bool:
    from services.models import AlertChannel, AlertDelivery, Incident

    with transaction.atomic():
        inc = Incident.objects.select_for_update().get(pk=incident.pk)
        if inc.status not in Incident.ACTIVE:
            return False
        inc.status = Incident.Status.RESOLVED
        inc.resolved_at = timezone.now()
        inc.save(update_fields=["status", "resolved_at"])
        deliveries = _queue_alerts(inc, "resolved", AlertChannel, AlertDelivery)
        record("incident.resolve", actor=actor, target=inc.service,
               payload={"incident": inc.pk, "title": inc.title, "evidence": evidence,
                        "open_seconds": round((inc.resolved_at - inc.opened_at).total_seconds(), 1),
                        "alerts": len(deliveries)})
    return True


def _queue_alerts(incident: Any, event: str, channel_model: Any, delivery_model: Any) -> list[int]:
    from django.db.models import Q

    channels = channel_model.objects.filter(Q(service__isnull=True) | Q(service=incident.service_id), enabled=True)
    payload = {
        "event": event,
        "incident": incident.pk,
        "service": incident.service.name,
        "kind": incident.kind,
        "severity": incident.severity,
        "status": incident.status,
        "title": incident.title,
        "openedAt": incident.opened_at.isoformat(),
        "evidence": incident.evidence,
    }
    ids = [delivery_model.objects.create(incident=incident, channel=c, event=event, payload=payload).pk
           for c in channels]
    if ids:
        from services import sla

        transaction.on_commit(lambda: sla.enqueue_deliveries(ids))
    return ids


def finish_alert_delivery(delivery: Any, *, sent: bool, attempts: int, response_status: int | None,
                          error: str = "") -> None:
    """The outcome of a webhook/email delivery after its retries."""
    from services.models import AlertDelivery

    with transaction.atomic():
        d = AlertDelivery.objects.select_for_update().select_related("channel", "incident").get(pk=delivery.pk)
        if d.status != AlertDelivery.Status.PENDING:
            return  # another worker finished it first
        d.status = AlertDelivery.Status.SENT if sent else AlertDelivery.Status.FAILED
        d.attempts, d.response_status, d.last_error = attempts, response_status, error[:300]
        d.sent_at = timezone.now() if sent else None
        d.save(update_fields=["status", "attempts", "response_status", "last_error", "sent_at"])
        record("alert.sent" if sent else "alert.failed", actor="system:alerts", target=d.incident.service,
               outcome=AuditEntry.Outcome.SUCCESS if sent else AuditEntry.Outcome.ERROR,
               payload={"incident": d.incident_id, "event": d.event, "channel": d.channel.name,
                        "kind": d.channel.kind, "attempts": attempts, "status": response_status,
                        "error": error[:300]})


def save_alert_channel(channel: Any, *, actor: Any) -> Any:
    created = channel.pk is None
    with transaction.atomic():
        channel.save()
        record("alert_channel.create" if created else "alert_channel.update", actor=actor, target=channel,
               payload={"name": channel.name, "kind": channel.kind, "target": channel.target,
                        "service": channel.service.name if channel.service_id else None})
    return channel


def delete_alert_channel(channel: Any, *, actor: Any) -> None:
    with transaction.atomic():
        record("alert_channel.delete", actor=actor, target=channel, payload={"name": channel.name})
        channel.delete()


def create_maintenance_window(service: Service, *, starts_at: Any, ends_at: Any, reason: str, actor: Any) -> Any:
    from audit.actions import actor_label
    from services.models import MaintenanceWindow

    with transaction.atomic():
        window = MaintenanceWindow(service=service, starts_at=starts_at, ends_at=ends_at, reason=reason[:200],
                                   created_by=actor_label(actor)[0][:150])
        window.full_clean()
        window.save()
        record("maintenance.create", actor=actor, target=service,
               payload={"window": window.pk, "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat(),
                        "reason": window.reason})
    return window


def end_maintenance_window(window: Any, *, actor: Any) -> None:
    now = timezone.now()
    with transaction.atomic():
        window.ends_at = max(now, window.starts_at)
        window.save(update_fields=["ends_at"])
        record("maintenance.end", actor=actor, target=window.service,
               payload={"window": window.pk, "ended_at": window.ends_at.isoformat()})


def create_scale_override(service: Service, *, owner: str, instances: int, ttl_seconds: int | None,
                          actor: Any, reason: str = "") -> Any:
    """Pause the autoscaler for this service (a manual scale). Any earlier active override ends."""
    from services.models import ScaleOverride

    now = timezone.now()
    with transaction.atomic():
        ScaleOverride.objects.filter(service=service, cleared_at__isnull=True).update(cleared_at=now)
        override = ScaleOverride.objects.create(
            service=service, owner=owner[:150], instances=instances, reason=reason[:200], created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds) if ttl_seconds else None,
        )
        record("autoscale.override", actor=actor, target=service,
               payload={"override": override.pk, "owner": override.owner, "instances": instances,
                        "expires_at": override.expires_at.isoformat() if override.expires_at else None,
                        "reason": override.reason})
    return override


def clear_scale_override(override: Any, *, actor: Any, reason: str) -> bool:
    from services.models import ScaleOverride

    with transaction.atomic():
        ov = ScaleOverride.objects.select_for_update().get(pk=override.pk)
        if ov.cleared_at is not None:
            return False
        ov.cleared_at = timezone.now()
        ov.save(update_fields=["cleared_at"])
        record("autoscale.override_end", actor=actor, target=ov.service,
               payload={"override": ov.pk, "owner": ov.owner, "reason": reason})
    return True


def update_sla_settings(service: Service, changes: dict[str, Any], *, actor: Any) -> Service:
    """Probe/SLA/autoscaler settings from the SLA page: validated like the admin form (a
    ValidationError leaves everything unchanged)."""
    with transaction.atomic():
        svc = Service.objects.select_for_update().get(pk=service.pk)
        diff = {k: [getattr(svc, k), v] for k, v in changes.items() if getattr(svc, k) != v}
        for name, value in changes.items():
            setattr(svc, name, value)
        svc.full_clean(exclude=["name"])
        svc.save()
        record("service.update", actor=actor, target=svc, payload={"changes": diff})
    return svc


def escalate_incident(incident: Any, *, severity: str, evidence: dict[str, Any], actor: Any = "system:sla") -> bool:
    """A slow burn (ticket) that turns into a fast burn (page) is the same incident, louder."""
    from services.models import AlertChannel, AlertDelivery, Incident

    with transaction.atomic():
        inc = Incident.objects.select_for_update().get(pk=incident.pk)
        if inc.status not in Incident.ACTIVE or inc.severity == severity:
            return False
        before = inc.severity
        inc.severity = severity
        inc.evidence = {**inc.evidence, "escalation": evidence}
        inc.save(update_fields=["severity", "evidence"])
        deliveries = _queue_alerts(inc, "escalated", AlertChannel, AlertDelivery)
        record("incident.escalate", actor=actor, target=inc.service,
               payload={"incident": inc.pk, "from": before, "to": severity, "evidence": evidence,
                        "alerts": len(deliveries)})
    return True
