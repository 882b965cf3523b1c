from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from core.permissions import RestrictedQuerySet
from fleet.drivers.base import ServiceSpec
from fleet.envvars import env_errors

NAME_VALIDATOR = RegexValidator(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$", "Letters, digits, '-', '_' and '.' only.")


class Service(models.Model):
    """A service: what to run (the spec), how many (the desired count) and its crash-loop state.
    Its probe settings, SLO targets and autoscaler settings are rows of the apps that own them
    (health.ProbeSettings, slo.Objectives, autoscaling.AutoscaleSettings), one each, created with
    the service."""

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
    # The service's own variables, the only ones its instances get besides the allowlist and the
    # markers (fleet.envvars). Values may be secrets: never shown back in full, never audited.
    env = models.JSONField(default=dict, blank=True,
                           help_text='environment of every instance, as {"NAME": "value"}; '
                                     "never the console's own variables")
    port = models.PositiveIntegerField(default=8080, help_text="port the instance listens on (in the container)")
    health_path = models.CharField(max_length=200, default="/health")
    desired_instances = models.PositiveIntegerField(default=0)

    class Rebalance(models.TextChoices):
        OFF = "off", "off"
        ON_RECOVERY = "on-recovery", "on recovery: move replicas back when a node returns"

    # Swarm never moves tasks back to a recovered node; with on-recovery the console does (fleet.nodes).
    rebalance = models.CharField(max_length=16, choices=Rebalance.choices, default=Rebalance.OFF)
    # Replicas above desired while a rebalance step waits for its new task to be healthy (0 or 1).
    surge = models.PositiveSmallIntegerField(default=0, editable=False)
    # Bumped whenever driver/command/image/port change: instances of an older version roll over.
    spec_version = models.PositiveIntegerField(default=1)
    last_scaled_at = models.DateTimeField(null=True, blank=True)
    # Crash-loop protection: consecutive early deaths and when starting may resume.
    failure_streak = models.PositiveIntegerField(default=0)
    backoff_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        permissions = [
            ("scale_service", "Can scale service"),
            # The process command runs on the console's host, and the environment can make any
            # program run something else (LD_PRELOAD, PYTHONSTARTUP, PATH): both are code execution,
            # so neither is part of change_service. Nobody has it by default but superusers.
            ("change_command_service", "Can change a service's command and environment"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.driver == self.Driver.PROCESS and not self.command:
            raise ValidationError({"command": "The process driver needs a command."})
        if self.driver in (self.Driver.DOCKER, self.Driver.SWARM) and not self.image:
            raise ValidationError({"image": "Docker and Swarm drivers need an image."})
        if problems := env_errors(self.env):
            raise ValidationError({"env": problems})

    def spec(self) -> ServiceSpec:
        return ServiceSpec(
            name=self.name,
            service_id=self.pk or 0,
            env=tuple(sorted((self.env or {}).items())),
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
    # Consecutive probe outcomes (health.probes), updated only when they change.
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


class EngineState(models.Model):
    """The last breaker transition of each engine (fleet.breakers): what the system page and the
    metrics show. Written by the controller on transitions only."""

    engine = models.CharField(max_length=20, unique=True)
    state = models.CharField(max_length=10)  # closed | open | half-open
    failures = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    changed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.engine}: {self.state}"


class SwarmNode(models.Model):
    """A node of the Swarm the console manages, as the controller's tick last saw it (written on
    changes only): what the nodes page, GET /mgmt/nodes and node-loss handling read."""

    node_id = models.CharField(max_length=64, unique=True)
    hostname = models.CharField(max_length=200)
    addr = models.CharField(max_length=100, blank=True)
    role = models.CharField(max_length=16)  # manager | worker
    leader = models.BooleanField(default=False)
    state = models.CharField(max_length=16)  # ready | down | unknown | disconnected
    message = models.CharField(max_length=300, blank=True)
    availability = models.CharField(max_length=16)  # active | pause | drain
    engine_version = models.CharField(max_length=64, blank=True)
    nano_cpus = models.BigIntegerField(default=0)
    memory_bytes = models.BigIntegerField(default=0)
    state_since = models.DateTimeField()
    seen_at = models.DateTimeField()
    gone = models.BooleanField(default=False)  # no longer listed by the swarm

    class Meta:
        ordering = ["hostname"]
        permissions = [("manage_nodes", "Can drain and activate Swarm nodes")]

    def __str__(self) -> str:
        return self.hostname
