from __future__ import annotations

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models


class Policy(models.Model):
    """An internal rule, edited by policy editors in Django admin; read on every request."""

    class Kind(models.TextChoices):
        CONCURRENT_RUNS = "concurrent_runs", "Concurrent runs (quota)"
        INSTANCE_BOUNDS = "instance_bounds", "Instance bounds per service"
        SCALING_RATE = "scaling_rate", "Scaling rate (step and cooldown)"
        CHANGE_FREEZE = "change_freeze", "Change freeze window"
        LAST_NODE_GUARD = "last_node_guard", "Never drain the last Swarm node running a service"

    class Applies(models.TextChoices):
        SCALE = "scale", "Scaling"
        RUNS = "runs", "Workflow runs"
        BOTH = "both", "Scaling and runs"

    name = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True)

    # concurrent_runs
    scope_flow = models.CharField(max_length=100, blank=True,
                                  help_text="Flow id this quota applies to, e.g. analyticsReport.")
    scope_tag = models.CharField(max_length=50, blank=True,
                                 help_text="Or: every flow carrying this tag, e.g. analytics.")
    per_user = models.BooleanField(default=True,
                                   help_text="Count each user's active runs separately (else everyone's together).")
    limit = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)],
                                        help_text="Most active (pending or running) runs at once.")

    class WhenFull(models.TextChoices):
        REFUSE = "refuse", "Refuse the start (429)"
        QUEUE = "queue", "Queue the run (202): it starts, in order, when a slot frees"

    when_full = models.CharField(
        "when full", max_length=8, choices=WhenFull.choices, default=WhenFull.REFUSE,
        help_text="What a start beyond the limit gets: refused, or queued in FIFO order per scope "
                  "(bounded by HMS_RUN_QUEUE_MAX; past it, refused).")

    # instance_bounds / scaling_rate: the service itself (blank = every service), never its name
    # text: a renamed service keeps its policies, and a new service under an old name gets none
    # of them. Referenced by label, not imported (policies sits below fleet); a policy of a
    # deleted service goes with it (fleet.actions.delete_service names them in its audit entry).
    service = models.ForeignKey("fleet.Service", null=True, blank=True, on_delete=models.CASCADE,
                                related_name="+", help_text="Service this applies to; blank = every service.")
    min_instances = models.PositiveIntegerField(null=True, blank=True, help_text="Fewest instances allowed.")
    max_instances = models.PositiveIntegerField(null=True, blank=True, help_text="Most instances allowed.")
    max_step = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)],
                                           help_text="Largest change of the instance count per request.")
    cooldown_seconds = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)],
                                                   help_text="Seconds after a change before the next one.")

    # change_freeze
    freeze_start = models.DateTimeField(null=True, blank=True, help_text="UTC.")
    freeze_end = models.DateTimeField(null=True, blank=True, help_text="UTC; the freeze ends at this instant.")
    applies_to = models.CharField(max_length=8, choices=Applies.choices, default=Applies.BOTH)
    exempt_group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.SET_NULL,
                                     help_text="Members of this group may still act during the freeze.")

    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "policies"
        ordering = ["kind", "name"]

    # The fields each kind uses; the others are cleared on save so a changed kind leaves no stale
    # numbers behind (and the admin shows only these).
    KIND_FIELDS: dict[str, tuple[str, ...]] = {
        Kind.CONCURRENT_RUNS: ("scope_flow", "scope_tag", "per_user", "limit", "when_full"),
        Kind.INSTANCE_BOUNDS: ("service", "min_instances", "max_instances"),
        Kind.SCALING_RATE: ("service", "max_step", "cooldown_seconds"),
        Kind.CHANGE_FREEZE: ("freeze_start", "freeze_end", "applies_to", "exempt_group"),
        Kind.LAST_NODE_GUARD: (),  # every service: nothing to fill in
    }
    TRACKED_FIELDS = ("name", "kind", "enabled", "description", "scope_flow", "scope_tag", "per_user", "limit",
                      "when_full",
                      "service", "min_instances", "max_instances", "max_step", "cooldown_seconds",
                      "freeze_start", "freeze_end", "applies_to", "exempt_group")

    def __str__(self) -> str:
        return self.name

    def clear_unused_fields(self) -> None:
        used = set(self.KIND_FIELDS.get(self.kind, ()))
        defaults = {"per_user": True, "applies_to": self.Applies.BOTH, "when_full": self.WhenFull.REFUSE}
        for name in self.TRACKED_FIELDS[4:]:
            if name not in used:
                attr = f"{name}_id" if name in ("exempt_group", "service") else name
                blank = "" if name in ("scope_flow", "scope_tag") else None
                setattr(self, attr, defaults.get(name, blank))

    def snapshot(self) -> dict[str, object]:
        """The editable fields as JSON-friendly values, for the audit entry's before→after diff."""
        out: dict[str, object] = {}
        for name in self.TRACKED_FIELDS:
            value = getattr(self, name)
            if name == "exempt_group":
                value = value.name if value is not None else None
            elif name == "service":
                # Its id (what the rule refers to) and its name at the time (for the reader).
                value = {"id": value.pk, "name": value.name} if value is not None else None
            elif hasattr(value, "isoformat"):
                value = value.isoformat()
            out[name] = value
        return out

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.kind == self.Kind.CONCURRENT_RUNS:
            if self.limit is None:
                errors["limit"] = "A concurrent-runs quota needs a limit (1 or more)."
            elif self.limit < 1:
                errors["limit"] = "A limit of 0 would refuse every run; disable the flow or use a freeze instead."
            if bool(self.scope_flow) == bool(self.scope_tag):
                errors["scope_flow"] = "Scope the quota to exactly one of: a flow id, or a tag."
        elif self.kind == self.Kind.INSTANCE_BOUNDS:
            if self.min_instances is None and self.max_instances is None:
                errors["max_instances"] = "Give a minimum, a maximum, or both."
            if (
                self.min_instances is not None
                and self.max_instances is not None
                and self.min_instances > self.max_instances
            ):
                errors["min_instances"] = "The minimum must not exceed the maximum."
        elif self.kind == self.Kind.SCALING_RATE:
            if self.max_step is None and self.cooldown_seconds is None:
                errors["max_step"] = "Give a largest step, a cooldown, or both."
            if self.max_step == 0:
                errors["max_step"] = "A largest step of 0 would forbid all scaling; use a freeze instead."
            if self.cooldown_seconds == 0:
                errors["cooldown_seconds"] = "Leave the cooldown blank for none, or give 1 second or more."
        elif self.kind == self.Kind.CHANGE_FREEZE:
            if not self.freeze_start or not self.freeze_end:
                errors["freeze_end"] = "A freeze needs a start and an end."
            elif self.freeze_end <= self.freeze_start:
                errors["freeze_end"] = "The freeze must end after it starts."
        if errors:
            raise ValidationError(errors)
