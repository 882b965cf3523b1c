"""What the probes observed (raw results and per-minute roll-ups) and the maintenance windows
that leave probes out of every figure and pause fail-over and autoscaling."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from core.numbers import validate_finite
from core.stats import LATENCY_BUCKETS_MS  # noqa: F401  (re-exported: the roll-ups' bucket bounds)
from fleet.models import Instance, Service


class ProbeResult(models.Model):
    """One raw probe, kept for a bounded window (HMS_PROBE_RAW_MINUTES) then pruned."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="probe_results")
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="probe_results")
    at = models.DateTimeField()
    ok = models.BooleanField()
    latency_ms = models.FloatField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=200, blank=True)
    in_maintenance = models.BooleanField(default=False)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["service", "at"]), models.Index(fields=["at"])]

    def __str__(self) -> str:
        return f"{self.instance_id} {'ok' if self.ok else 'fail'} {self.latency_ms:.0f} ms at {self.at:%H:%M:%S}"


class ProbeRollup(models.Model):
    """Per service and period: what the SLA and the pages read, so reads and storage stay bounded.

    Three tiers (`span`): minute rows are rolled up from the raw results; an hour row is the sum of
    its minutes and a day row the sum of its hours (histograms summed bucket by bucket, so a
    percentile over any span of them is exactly what the minutes would give). A window reads the
    coarsest rows that cover it: 30 days are ~30 day rows + ~50 hour rows + ≤ 60 minute rows
    instead of 43,200 minute rows (health.rollups.segments)."""

    class Span(models.IntegerChoices):
        MINUTE = 60, "minute"
        HOUR = 3600, "hour"
        DAY = 86400, "day"

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="rollups")
    span = models.PositiveIntegerField(choices=Span.choices, default=Span.MINUTE)
    start = models.DateTimeField()  # the period's start (UTC, aligned to its span)
    total = models.PositiveIntegerField(default=0)  # probes outside maintenance
    up = models.PositiveIntegerField(default=0)
    down = models.PositiveIntegerField(default=0)
    slow = models.PositiveIntegerField(default=0)  # good but slower than the latency objective
    excluded = models.PositiveIntegerField(default=0)  # probes inside a maintenance window
    hist = models.JSONField(default=list)  # counts per LATENCY_BUCKETS_MS (+1 overflow bucket)
    p50_ms = models.FloatField(null=True, blank=True)
    p95_ms = models.FloatField(null=True, blank=True)
    max_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["service", "span", "start"]
        constraints = [models.UniqueConstraint(fields=["service", "span", "start"], name="unique_rollup_period")]
        # Fleet-wide reads (the SLA table, the SLO evaluation) filter on span and start for every
        # service at once.
        indexes = [models.Index(fields=["span", "start"], name="rollup_span_start")]

    def __str__(self) -> str:
        return f"{self.service_id} {self.get_span_display()} {self.start:%Y-%m-%d %H:%M}: {self.up}/{self.total}"


class MaintenanceWindow(models.Model):
    """Excluded from uptime and budget; pauses fail-over and autoscaling of the service."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="maintenance_windows")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=200, blank=True)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-starts_at"]

    def __str__(self) -> str:
        return f"{self.service_id} {self.starts_at:%Y-%m-%d %H:%M}–{self.ends_at:%H:%M}"

    def clean(self) -> None:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": "The window must end after it starts."})


class ProbeSettings(models.Model):
    """How a service's instances are probed: interval down to 1 s; an instance failing
    `failure_threshold` probes in a row is replaced, `success_threshold` in a row make it healthy.
    One row per service, created with it (health/apps.py)."""

    service = models.OneToOneField(Service, on_delete=models.CASCADE, primary_key=True, related_name="probe_settings")
    probe_interval_seconds = models.FloatField(default=5.0, validators=[validate_finite, MinValueValidator(1.0)])
    probe_timeout_seconds = models.FloatField(default=1.0, validators=[validate_finite, MinValueValidator(0.1)])
    failure_threshold = models.PositiveIntegerField(default=2, validators=[MinValueValidator(1)])
    success_threshold = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])

    class Meta:
        verbose_name_plural = "probe settings"

    def __str__(self) -> str:
        return f"probes of {self.service_id}: every {self.probe_interval_seconds:g} s"

    def clean(self) -> None:
        if self.probe_timeout_seconds > self.probe_interval_seconds:
            raise ValidationError({"probe_timeout_seconds": "The timeout must not exceed the interval."})
