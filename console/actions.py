"""console's one action: a service's settings as the SLA page edits them, spread over the apps
that own them (health's probe settings, slo's objectives, autoscaling's settings), changed in one
transaction with one audit entry, as the form was one change."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from audit import events
from audit.actions import record
from autoscaling import actions as autoscaling_actions
from autoscaling.forms import AutoscaleSettingsForm
from fleet.models import Service
from health import actions as health_actions
from health.forms import ProbeSettingsForm
from slo import actions as slo_actions
from slo.forms import ObjectivesForm

OWNERS = ((ProbeSettingsForm, health_actions), (ObjectivesForm, slo_actions),
          (AutoscaleSettingsForm, autoscaling_actions))


def update_service_settings(service: Service, changes: dict[str, Any], *, actor: Any) -> Service:
    """Apply {field: value} (any of the three parts' fields); a ValidationError leaves everything
    unchanged. One `service.update` entry names every field that changed. Changing the autoscaler's
    bounds while it is on, or turning it on, needs `scale` on the service as well as `change`:
    autoscaling.actions.ScalingRefused (a PermissionDenied) otherwise, with nothing changed."""
    unknown = set(changes) - {f for form, _ in OWNERS for f in form.Meta.fields}
    if unknown:
        raise ValueError(f"not a service setting: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        # New autoscaler bounds (or turning it on) scale the service: `scale` too, checked first.
        auto = {k: v for k, v in changes.items() if k in AutoscaleSettingsForm.Meta.fields}
        autoscaling_actions.check_scaling_right(service, auto, actor=actor)
        diff: dict[str, list[Any]] = {}
        for form, owner in OWNERS:
            part = {k: v for k, v in changes.items() if k in form.Meta.fields}
            if part:
                diff |= owner.apply_settings(service, part)
        record(events.SERVICE_UPDATE, actor=actor, target=service, payload={"changes": diff})
    for attr in ("probe_settings", "objectives", "autoscale_settings"):
        service._state.fields_cache.pop(attr, None)  # the caller reads the new values on next access
    return service
