"""Domain actions of autoscaling: the overrides that pause the autoscaler. A manual scale becomes
an override row through fleet's scale hook (registered in apps.py), in the scale's own transaction:
the autoscaler reads its state from these rows, never back from audit payloads."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from audit import events
from audit.actions import actor_label, record
from autoscaling.models import AutoscaleSettings, ScaleOverride
from core.permissions import can
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


# The autoscaler's bounds decide how many instances run while it is on: setting them is scaling.
BOUNDS = ("min_instances", "max_instances")


class ScalingRefused(PermissionDenied):
    """A settings change that would scale the service, by someone who may change it but not scale it."""


def scaling_fields(current: AutoscaleSettings, changes: dict[str, Any]) -> list[str]:
    """The fields of `changes` that scale the service: turning the autoscaler on, and new min/max
    bounds while it is on (before or after this change). Bounds changed while it stays off scale
    nothing; turning it on does (it then scales within the bounds set while it was off)."""
    was_on = current.autoscale_enabled
    on_after = bool(changes.get("autoscale_enabled", was_on))
    fields = ["autoscale_enabled"] if on_after and not was_on else []
    if was_on or on_after:
        fields += [f for f in BOUNDS if f in changes and changes[f] != getattr(current, f)]
    return fields


def may_scale(actor: Any, service: Service) -> bool:
    """Users need `scale` on the service; system actors (the demo, management commands, tests'
    set-up) are the operator's own code, as for fleet.actions.may_set_command."""
    if isinstance(actor, str):
        return actor.startswith("system:")
    return can(actor, "scale", service)


def check_scaling_right(service: Service, changes: dict[str, Any], *, actor: Any) -> None:
    """Inside the caller's transaction, before it writes anything: ScalingRefused (a 403 naming the
    fields and the permission) when `changes` scale the service and the actor may not scale it.
    The row is read locked, so the answer holds until the change commits (a concurrent "turn the
    autoscaler on" cannot slip between this check and the write)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("check_scaling_right() must run inside the caller's transaction")
    if not any(f in changes for f in ("autoscale_enabled", *BOUNDS)) or may_scale(actor, service):
        return
    current = AutoscaleSettings.objects.select_for_update().get(pk=service.pk)
    fields = scaling_fields(current, changes)
    if not fields:
        return
    what = []
    if "autoscale_enabled" in fields:
        what.append("turning the autoscaler on")
    bounds = [f for f in fields if f in BOUNDS]
    if bounds:
        what.append(f"changing {' and '.join(bounds)} while the autoscaler is on")
    raise ScalingRefused(
        f"You may change {service.name} but not scale it: {' and '.join(what)} decides how many instances "
        f"run, which needs the permission fleet.scale_service (scale) as well as change. Nothing was changed.")


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
    """apply_settings() as its own audited change (admin edits one part). Changes that scale the
    service need `scale` on it (check_scaling_right): ScalingRefused otherwise, nothing written."""
    with transaction.atomic():
        check_scaling_right(service, changes, actor=actor)
        diff = apply_settings(service, changes)
        record(events.SERVICE_UPDATE, actor=actor, target=service, payload={"changes": diff})
    return diff
