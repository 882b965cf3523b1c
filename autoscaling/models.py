"""The autoscaler's stored state: every decision with its inputs, and the overrides that pause it."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from fleet.models import Service


class AutoscaleDecision(models.Model):
    """Every autoscaler evaluation, "no change" included, with what it saw and why."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="autoscale_decisions")
    at = models.DateTimeField()
    current = models.PositiveIntegerField()
    raw = models.PositiveIntegerField(help_text="formula result before windows, rates and bounds")
    desired = models.PositiveIntegerField()
    applied = models.BooleanField(default=False)
    summary = models.CharField(max_length=300)
    inputs = models.JSONField(default=dict)  # metrics, targets, ratios, burn state, override
    clipped = models.JSONField(default=list)  # which window, rate or bound changed the result

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["service", "at"])]

    def __str__(self) -> str:
        return f"{self.service_id} {self.current}→{self.desired}: {self.summary}"


class ScaleOverride(models.Model):
    """A manual scale pauses the autoscaler for that service until it expires or is cleared."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="scale_overrides")
    owner = models.CharField(max_length=150)
    instances = models.PositiveIntegerField()
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    cleared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.owner}: {self.instances} instances"


class AutoscaleSettings(models.Model):
    """The autoscaler's knobs for one service (off by default): bounds, metric targets (an empty
    target is not used), rate limits and stabilization windows, as the Kubernetes HPA has them.
    One row per service, created with it (autoscaling/apps.py)."""

    service = models.OneToOneField(Service, on_delete=models.CASCADE, primary_key=True,
                                   related_name="autoscale_settings")
    autoscale_enabled = models.BooleanField(default=False)
    min_instances = models.PositiveIntegerField(default=1)
    max_instances = models.PositiveIntegerField(default=10)
    target_cpu_percent = models.PositiveIntegerField(null=True, blank=True, default=70)
    target_latency_ms = models.PositiveIntegerField(null=True, blank=True, help_text="p95; empty = the objective")
    target_demand_per_instance = models.PositiveIntegerField(
        null=True, blank=True, default=4, help_text="workflow steps queued or running per instance"
    )
    scale_up_max_step = models.PositiveIntegerField(default=4, validators=[MinValueValidator(1)])
    scale_down_max_step = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    scale_up_stabilization_seconds = models.PositiveIntegerField(default=0)
    scale_down_stabilization_seconds = models.PositiveIntegerField(default=300)
    # When autoscale_enabled last turned on (set by actions.apply_settings): no scale-down within the
    # scale-down stabilization window of it, as the HPA. Null: enabled before this was recorded.
    autoscale_enabled_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name_plural = "autoscale settings"

    def __str__(self) -> str:
        return f"autoscaler of {self.service_id}: {'on' if self.autoscale_enabled else 'off'}"

    def clean(self) -> None:
        if self.min_instances > self.max_instances:
            raise ValidationError({"max_instances": "Max instances must be at least min instances."})
