"""Incidents opened by burn-rate alerts, the channels that hear about them and each delivery."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from core.numbers import validate_finite
from core.outbound import redact_target
from fleet.models import Service


class Incident(models.Model):
    class Kind(models.TextChoices):
        AVAILABILITY = "availability"
        LATENCY = "latency"
        CAPACITY = "capacity"  # running below desired past a grace period (slo.capacity)
        DEADLINE = "deadline"  # a workflow run missed its flow's deadline (no service: the flow and run)

    class Severity(models.TextChoices):
        PAGE = "page"  # wakes someone up (by default the 1 h and 6 h window pairs)
        TICKET = "ticket"  # worth a look in working hours (by default the 3-day pair)

    class Status(models.TextChoices):
        OPEN = "open"
        ACKNOWLEDGED = "acknowledged"
        RESOLVED = "resolved"

    ACTIVE = (Status.OPEN, Status.ACKNOWLEDGED)

    # A burn-rate incident is a service's; a deadline incident names its flow and run instead
    # (slo sits below workflows, so these are plain values, not foreign keys).
    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="incidents", null=True, blank=True)
    flow_slug = models.CharField(max_length=100, blank=True, default="")
    run_id = models.PositiveBigIntegerField(null=True, blank=True)
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
        return f"{self.subject}: {self.title}"

    @property
    def subject(self) -> str:
        """What the incident is about: the service's name, or the flow and run of a deadline."""
        if self.service_id is not None:
            return self.service.name
        return f"flow {self.flow_slug} run {self.run_id}" if self.run_id else f"flow {self.flow_slug}"


class AlertChannel(models.Model):
    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Webhook (JSON POST)"
        EMAIL = "email", "Email"
        ALERTMANAGER = "alertmanager", "Prometheus Alertmanager (API v2)"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    target = models.CharField(max_length=500,
                              help_text="webhook URL, email address or Alertmanager base URL (http://host:9093)")
    service = models.ForeignKey(
        Service, on_delete=models.CASCADE, null=True, blank=True, related_name="alert_channels",
        help_text="empty = every service",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        # A channel for every service hears about services its creator may not see: a global
        # permission of its own (slo.add_alertchannel alone covers channels of visible services).
        permissions = [("add_global_alertchannel", "Can add alert channels for every service")]

    def __str__(self) -> str:
        return self.name

    @property
    def shown_target(self) -> str:
        """The target as pages show it (a webhook URL redacted: core.outbound.redact_url)."""
        return redact_target(self.kind, self.target)


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
    # When a worker last took it: a second task for the same delivery (a re-send of one thought
    # lost) finds it claimed and leaves it alone, so an alert is never sent twice at once.
    claimed_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.event} → {self.channel_id}: {self.status}"


# The SRE workbook's three burn-rate window pairs: (name, field prefix, long s, short s, default
# factor, default severity). The windows are fixed so that evaluate_all reads the same five windows
# for the whole fleet in one grouped query each; factor and severity are per SLO.
BURN_PAIRS: tuple[tuple[str, str, int, int, float, str], ...] = (
    ("1h/5m", "burn_1h", 3600, 300, 14.4, Incident.Severity.PAGE),
    ("6h/30m", "burn_6h", 6 * 3600, 1800, 6.0, Incident.Severity.PAGE),
    ("3d/6h", "burn_3d", 3 * 86400, 6 * 3600, 1.0, Incident.Severity.TICKET),
)
_FACTOR = [validate_finite, MinValueValidator(0.1), MaxValueValidator(1000)]


class Objectives(models.Model):
    """A service's two SLOs, both measured on probes: percent of good probes, and p95 latency, and
    the burn-rate factor and severity of each window pair (BURN_PAIRS) alerting on them.
    One row per service, created with it (slo/apps.py)."""

    service = models.OneToOneField(Service, on_delete=models.CASCADE, primary_key=True, related_name="objectives")
    uptime_objective = models.FloatField(default=99.9, validators=[validate_finite, MinValueValidator(50),
                                                                    MaxValueValidator(99.999)])
    latency_objective_ms = models.PositiveIntegerField(default=300, validators=[MinValueValidator(1)])
    burn_1h_factor = models.FloatField(default=14.4, validators=_FACTOR,
                                       help_text="alert when the 1 h and 5 min windows both burn at least this fast")
    burn_1h_severity = models.CharField(max_length=16, choices=Incident.Severity.choices,
                                        default=Incident.Severity.PAGE)
    burn_6h_factor = models.FloatField(default=6.0, validators=_FACTOR,
                                       help_text="alert when the 6 h and 30 min windows both burn at least this fast")
    burn_6h_severity = models.CharField(max_length=16, choices=Incident.Severity.choices,
                                        default=Incident.Severity.PAGE)
    burn_3d_factor = models.FloatField(default=1.0, validators=_FACTOR,
                                       help_text="alert when the 3 d and 6 h windows both burn at least this fast")
    burn_3d_severity = models.CharField(max_length=16, choices=Incident.Severity.choices,
                                        default=Incident.Severity.TICKET)

    class Meta:
        verbose_name_plural = "objectives"

    def __str__(self) -> str:
        return f"{self.service_id}: uptime ≥ {self.uptime_objective:g} %, p95 ≤ {self.latency_objective_ms} ms"
