"""Domain actions of autoscaling: the overrides that pause the autoscaler. A manual scale becomes
an override row through fleet's scale hook (registered in apps.py), in the scale's own transaction:
the autoscaler reads its state from these rows, never back from audit payloads."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import events
from audit.actions import actor_label, record
from autoscaling.models import AutoscaleSettings, ScaleOverride
from core.rows import apply_fields
from fleet.models import Service

ACTOR = "system:autoscaler"
# The scale reason of a hold set from the SLA page, which creates its own override (with the
# TTL the operator chose) right after the scale: the hook leaves that one alone.
HOLD_REASON = "manual override"


def create_scale_override(service: Service, *, owner: str, instances: int, ttl_seconds: int | None,
                          actor: Any, reason: str = "") -> Any:
    """Pause the autoscaler for this service (a manual scale). Any earlier active override ends."""

    now = timezone.now()
    with transaction.atomic():
        ScaleOverride.objects.filter(service=service, cleared_at__isnull=True).update(cleared_at=now)
        override = ScaleOverride.objects.create(
            service=service, owner=owner[:150], instances=instances, reason=reason[:200], created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds) if ttl_seconds else None,
        )
        record(events.AUTOSCALE_OVERRIDE, actor=actor, target=service,
               payload={"override": override.pk, "owner": override.owner, "instances": instances,
                        "expires_at": override.expires_at.isoformat() if override.expires_at else None,
                        "reason": override.reason})
    return override


def clear_scale_override(override: Any, *, actor: Any, reason: str) -> bool:

    with transaction.atomic():
        ov = ScaleOverride.objects.select_for_update().get(pk=override.pk)
        if ov.cleared_at is not None:
            return False
        ov.cleared_at = timezone.now()
        ov.save(update_fields=["cleared_at"])
        record(events.AUTOSCALE_OVERRIDE_END, actor=actor, target=ov.service,
               payload={"override": ov.pk, "owner": ov.owner, "reason": reason})
    return True




def override_manual_scale(service: Service, *, previous: int, instances: int, actor: Any, reason: str = "") -> None:
    """fleet's scale hook: a scale by anyone but the autoscaler itself, of a service the autoscaler
    runs, pauses the autoscaler at that count for HMS_AUTOSCALE_OVERRIDE_TTL_SECONDS (0 = until
    cleared). Runs inside the scale's transaction, so the override exists exactly when the scale
    does. System actors other than the autoscaler (none scales today) would be overrides too."""
    enabled = AutoscaleSettings.objects.filter(pk=service.pk, autoscale_enabled=True).exists()  # fresh, not cached
    if not enabled or actor_label(actor)[0] == ACTOR or reason == HOLD_REASON:
        return
    ttl = settings.HMS_AUTOSCALE_OVERRIDE_TTL_SECONDS or None
    create_scale_override(service, owner=actor_label(actor)[0], instances=instances, ttl_seconds=ttl, actor=ACTOR,
                          reason=f"manual scale {previous} → {instances}")


def apply_settings(service: Service, changes: dict[str, Any]) -> dict[str, list[Any]]:
    """The service's AutoscaleSettings fields, changed inside the caller's transaction (console.actions
    audits a whole settings form as one change). Turning the autoscaler on records when
    (autoscale_enabled_at; the caller's audit entry, written in the same transaction, says
    `autoscale_enabled: [false, true]` at that time, so the diff needs no second key)."""
    diff = apply_fields(AutoscaleSettings, service.pk, changes)
    if diff.get("autoscale_enabled") == [False, True]:
        AutoscaleSettings.objects.filter(pk=service.pk).update(autoscale_enabled_at=timezone.now())
    return diff


def update_settings(service: Service, changes: dict[str, Any], *, actor: Any) -> dict[str, list[Any]]:
    """apply_settings() as its own audited change (admin edits one part)."""
    with transaction.atomic():
        diff = apply_settings(service, changes)
        record(events.SERVICE_UPDATE, actor=actor, target=service, payload={"changes": diff})
    return diff
