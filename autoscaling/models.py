"""The autoscaler's stored state: every decision with its inputs, and the overrides that pause it."""

from __future__ import annotations

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
