from __future__ import annotations

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models


class Policy(models.Model):
    """An internal rule, edited by policy editors in Django admin; read on every request."""

    class Kind(models.TextChoices):
        CONCURRENT_RUNS = "concurrent_runs", "Concurrent runs (quota)"
        INSTANCE_BOUNDS = "instance_bounds", "Instance bounds per service"
        SCALING_RATE = "scaling_rate", "Scaling rate (step and cooldown)"
        CHANGE_FREEZE = "change_freeze", "Change freeze window"

    class Applies(models.TextChoices):
        SCALE = "scale", "Scaling"
        RUNS = "runs", "Workflow runs"
        BOTH = "both", "Scaling and runs"

    name = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True)

    # concurrent_runs
    scope_flow = models.CharField(max_length=100, blank=True, help_text="flow id this quota applies to")
    scope_tag = models.CharField(max_length=50, blank=True, help_text="or: every flow with this tag")
    per_user = models.BooleanField(default=True, help_text="count per user (else across everyone)")
    limit = models.PositiveIntegerField(null=True, blank=True)

    # instance_bounds / scaling_rate: service name, blank = every service
    service_name = models.CharField(max_length=100, blank=True)
    min_instances = models.PositiveIntegerField(null=True, blank=True)
    max_instances = models.PositiveIntegerField(null=True, blank=True)
    max_step = models.PositiveIntegerField(null=True, blank=True, help_text="largest change per request")
    cooldown_seconds = models.PositiveIntegerField(null=True, blank=True)

    # change_freeze
    freeze_start = models.DateTimeField(null=True, blank=True)
    freeze_end = models.DateTimeField(null=True, blank=True)
    applies_to = models.CharField(max_length=8, choices=Applies.choices, default=Applies.BOTH)
    exempt_group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.SET_NULL)

    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "policies"
        ordering = ["kind", "name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.kind == self.Kind.CONCURRENT_RUNS:
            if self.limit is None:
                errors["limit"] = "A concurrent-runs quota needs a limit."
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
        elif self.kind == self.Kind.CHANGE_FREEZE:
            if not self.freeze_start or not self.freeze_end:
                errors["freeze_end"] = "A freeze needs a start and an end."
            elif self.freeze_end <= self.freeze_start:
                errors["freeze_end"] = "The freeze must end after it starts."
        if errors:
            raise ValidationError(errors)
