"""Incidents opened by burn-rate alerts, the channels that hear about them and each delivery."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from fleet.models import Service


class Incident(models.Model):
    class Kind(models.TextChoices):
        AVAILABILITY = "availability"
        LATENCY = "latency"

    class Severity(models.TextChoices):
        PAGE = "page"  # fast burn
        TICKET = "ticket"  # slow burn

    class Status(models.TextChoices):
        OPEN = "open"
        ACKNOWLEDGED = "acknowledged"
        RESOLVED = "resolved"

    ACTIVE = (Status.OPEN, Status.ACKNOWLEDGED)

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="incidents")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    title = models.CharField(max_length=200)
    evidence = models.JSONField(default=dict, blank=True)  # burn rates and windows when it opened
    opened_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        indexes = [models.Index(fields=["service", "status"])]

    def __str__(self) -> str:
        return f"{self.service.name}: {self.title}"


class AlertChannel(models.Model):
    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Webhook (JSON POST)"
        EMAIL = "email", "Email"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    target = models.CharField(max_length=500, help_text="webhook URL or email address")
    service = models.ForeignKey(
        Service, on_delete=models.CASCADE, null=True, blank=True, related_name="alert_channels",
        help_text="empty = every service",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AlertDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(AlertChannel, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=16)  # opened | acknowledged | resolved
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.event} → {self.channel_id}: {self.status}"


class Objectives(models.Model):
    """A service's two SLOs, both measured on probes: percent of good probes, and p95 latency.
    One row per service, created with it (slo/apps.py)."""

    service = models.OneToOneField(Service, on_delete=models.CASCADE, primary_key=True, related_name="objectives")
    uptime_objective = models.FloatField(default=99.9, validators=[MinValueValidator(50), MaxValueValidator(99.999)])
    latency_objective_ms = models.PositiveIntegerField(default=300, validators=[MinValueValidator(1)])

    class Meta:
        verbose_name_plural = "objectives"

    def __str__(self) -> str:
        return f"{self.service_id}: uptime ≥ {self.uptime_objective:g} %, p95 ≤ {self.latency_objective_ms} ms"
