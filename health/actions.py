"""Domain actions of health: maintenance windows, and the fail-over of an instance that failed its
probes (decided here, carried out by fleet). Each writes its audit entry in its transaction."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from audit import events
from audit.actions import actor_label, record
from core.rows import apply_fields
from fleet import actions as fleet_actions
from fleet.models import Instance, Service
from health.models import MaintenanceWindow, ProbeSettings
from health.selectors import maintenance_window


def fail_over_unhealthy(instance: Instance, *, evidence: dict[str, Any], component: str = "monitor") -> bool:
    """Fail over an instance that reached its failure threshold, unless its service is in
    maintenance (maintenance pauses fail-over). Safe to call twice."""
    with transaction.atomic():
        if maintenance_window(instance.service_id) is not None:
            return False
        return fleet_actions.fail_over_unhealthy(instance, evidence=evidence, component=component)


def create_maintenance_window(service: Service, *, starts_at: Any, ends_at: Any, reason: str, actor: Any) -> Any:
    with transaction.atomic():
        window = MaintenanceWindow(service=service, starts_at=starts_at, ends_at=ends_at, reason=reason[:200],
                                   created_by=actor_label(actor)[0][:150])
        window.full_clean()
        window.save()
        record(events.MAINTENANCE_CREATE, actor=actor, target=service,
               payload={"window": window.pk, "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat(),
                        "reason": window.reason})
    return window


def end_maintenance_window(window: Any, *, actor: Any) -> None:
    now = timezone.now()
    with transaction.atomic():
        window.ends_at = max(now, window.starts_at)
        window.save(update_fields=["ends_at"])
        record(events.MAINTENANCE_END, actor=actor, target=window.service,
               payload={"window": window.pk, "ended_at": window.ends_at.isoformat()})


def apply_settings(service: Service, changes: dict[str, Any]) -> dict[str, list[Any]]:
    """The service's ProbeSettings fields, changed inside the caller's transaction (console.actions
    audits a whole settings form as one change)."""
    return apply_fields(ProbeSettings, service.pk, changes)


def update_settings(service: Service, changes: dict[str, Any], *, actor: Any) -> dict[str, list[Any]]:
    """apply_settings() as its own audited change (admin edits one part)."""
    with transaction.atomic():
        diff = apply_settings(service, changes)
        record(events.SERVICE_UPDATE, actor=actor, target=service, payload={"changes": diff})
    return diff
