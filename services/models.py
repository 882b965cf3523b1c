from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from services.drivers.base import ServiceSpec

NAME_VALIDATOR = RegexValidator(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$", "Letters, digits, '-', '_' and '.' only.")


class Service(models.Model):
    class Driver(models.TextChoices):
        PROCESS = "process", "Local processes"
        DOCKER = "docker", "Docker engine"
        SWARM = "swarm", "Docker Swarm"

    name = models.CharField(max_length=63, unique=True, validators=[NAME_VALIDATOR])
    description = models.CharField(max_length=200, blank=True)
    driver = models.CharField(max_length=16, choices=Driver.choices, default=Driver.PROCESS)
    command = models.CharField(
        max_length=500,
        blank=True,
        help_text="process driver: command line; {python} and {port} are filled in",
    )
    image = models.CharField(max_length=200, blank=True, help_text="docker/swarm: image reference")
    port = models.PositiveIntegerField(default=8080, help_text="port the instance listens on (in the container)")
    health_path = models.CharField(max_length=200, default="/health")
    desired_instances = models.PositiveIntegerField(default=0)
    # Bumped whenever driver/command/image/port change: instances of an older version roll over.
    spec_version = models.PositiveIntegerField(default=1)
    last_scaled_at = models.DateTimeField(null=True, blank=True)
    # Crash-loop protection: consecutive early deaths and when starting may resume.
    failure_streak = models.PositiveIntegerField(default=0)
    backoff_until = models.DateTimeField(null=True, blank=True)
    # Probes (services.monitoring): interval down to 1 s; an instance failing `failure_threshold`
    # probes in a row is replaced.
    probe_interval_seconds = models.FloatField(default=5.0, validators=[MinValueValidator(1.0)])
    probe_timeout_seconds = models.FloatField(default=1.0, validators=[MinValueValidator(0.1)])
    failure_threshold = models.PositiveIntegerField(default=2, validators=[MinValueValidator(1)])
    success_threshold = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    # SLA (services.sla): percent of good probes, and a p95 latency objective.
    uptime_objective = models.FloatField(default=99.9, validators=[MinValueValidator(50), MaxValueValidator(99.999)])
    latency_objective_ms = models.PositiveIntegerField(default=300, validators=[MinValueValidator(1)])
    # Autoscaler (services.autoscale): a metric with an empty target is not used.
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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        permissions = [("scale_service", "Can scale service")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.driver == self.Driver.PROCESS and not self.command:
            raise ValidationError({"command": "The process driver needs a command."})
        if self.driver in (self.Driver.DOCKER, self.Driver.SWARM) and not self.image:
            raise ValidationError({"image": "Docker and Swarm drivers need an image."})
        if self.min_instances > self.max_instances:
            raise ValidationError({"max_instances": "Max instances must be at least min instances."})
        if self.probe_timeout_seconds > self.probe_interval_seconds:
            raise ValidationError({"probe_timeout_seconds": "The timeout must not exceed the interval."})

    def spec(self) -> ServiceSpec:
        return ServiceSpec(
            name=self.name,
            command=self.command,
            image=self.image,
            port=self.port,
            health_path=self.health_path,
            version=self.spec_version,
        )


class Instance(models.Model):
    class State(models.TextChoices):
        STARTING = "starting"
        RUNNING = "running"
        STOPPING = "stopping"
        STOPPED = "stopped"
        EXITED = "exited"  # died without being asked to

    class Health(models.TextChoices):
        UNKNOWN = "unknown"
        UP = "up"
        DOWN = "down"

    LIVE_STATES = (State.STARTING, State.RUNNING)

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="instances")
    driver = models.CharField(max_length=16)
    ref = models.CharField(max_length=100, blank=True, help_text="pid, container id or task id")
    node = models.CharField(max_length=100, blank=True)
    host = models.CharField(max_length=100, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.STARTING)
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.UNKNOWN)
    spec_version = models.PositiveIntegerField(default=1)
    restarts = models.PositiveIntegerField(default=0, help_text="replacements in this slot's lineage")
    exit_reason = models.CharField(max_length=300, blank=True)
    cpu_percent = models.FloatField(null=True, blank=True)
    memory_bytes = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    healthy_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    # Consecutive probe outcomes (services.monitoring), updated only when they change.
    probe_failures = models.PositiveIntegerField(default=0)
    probe_successes = models.PositiveIntegerField(default=0)
    last_probe_at = models.DateTimeField(null=True, blank=True)
    last_probe_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["service", "id"]
        indexes = [models.Index(fields=["service", "state"])]

    def __str__(self) -> str:
        return f"{self.service.name}#{self.pk}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if self.host and self.port else ""


# --- Probes, SLA, incidents, alerts, autoscaling (issue 5) ---------------------------------------
# Latency histogram bucket upper bounds (ms) shared by the roll-ups: merging histograms gives a
# percentile for any window without keeping raw samples (the last bucket is "above 10 s").
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    5, 10, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000,
)


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
    """Per service and minute: what the SLA and the pages read, so storage stays bounded."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="rollups")
    minute = models.DateTimeField()
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
        ordering = ["service", "minute"]
        constraints = [models.UniqueConstraint(fields=["service", "minute"], name="unique_rollup_minute")]

    def __str__(self) -> str:
        return f"{self.service_id} {self.minute:%Y-%m-%d %H:%M}: {self.up}/{self.total}"


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
