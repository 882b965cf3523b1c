from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from core.permissions import RestrictedQuerySet

FLOW_ID_VALIDATOR = RegexValidator(r"^[A-Za-z][A-Za-z0-9_-]{0,99}$", "A flow id is a slug like exportPatientData.")


class WorkflowDefinition(models.Model):
    """A flow: a DAG of steps, each {name, action, params, depends_on, retries, timeout}."""

    slug = models.CharField("flow id", max_length=100, unique=True, validators=[FLOW_ID_VALIDATOR])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True)
    steps = models.JSONField(default=list)
    # {"within_seconds": 1800} or {"by": "06:00", "tz": "Europe/Berlin"} (workflows.deadlines);
    # a run missing it opens an incident that alerts through the SLA alert channels.
    deadline = models.JSONField(null=True, blank=True, help_text='finish within N seconds of the start: '
                                '{"within_seconds": 1800}; or by a wall-clock time: {"by": "06:00", '
                                '"tz": "Europe/Berlin"} (the next such instant after the start)')
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]
        permissions = [("run_workflowdefinition", "Can run workflow")]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from workflows.dag import validate_definition  # dag → steps → fleet: loaded after this module
        from workflows.deadlines import validate_deadline  # imports this module's neighbours

        validate_definition(self.steps, self.tags)
        try:
            validate_deadline(self.deadline)
        except ValueError as exc:
            raise ValidationError({"deadline": str(exc)}) from None


class WorkflowRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"  # waiting in a queueing quota's queue: holds no slot, no step has started
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE = (Status.PENDING, Status.RUNNING)  # holding a quota slot
    UNFINISHED = (Status.QUEUED, Status.PENDING, Status.RUNNING)  # may still change (cancellable)
    owner_field = "actor"  # the choke point lets a run's owner see it

    definition = models.ForeignKey(WorkflowDefinition, on_delete=models.PROTECT, related_name="runs")
    flow_slug = models.CharField(max_length=100, db_index=True)
    # ",tag1,tag2," so a quota can count runs by tag with one indexed LIKE on any database.
    tag_list = models.CharField(max_length=300, blank=True)
    data = models.JSONField(default=dict, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A queued run: the queue it waits in (policies.enforce.queue_key: "<policy id>:<user id|*>");
    # FIFO is by id, which each start takes under the quota's lock. Kept once dequeued (history).
    queue_key = models.CharField(max_length=40, blank=True, default="")
    dequeued_at = models.DateTimeField(null=True, blank=True)
    # Computed from the flow's deadline when the run is submitted (queued time counts).
    deadline_at = models.DateTimeField(null=True, blank=True)
    # The slo.Incident its missed deadline opened: a plain id, not a foreign key, so workflows'
    # migrations need none of slo's (the old-database migration test unapplies slo alone).
    deadline_incident_id = models.PositiveBigIntegerField(null=True, blank=True)

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        permissions = [
            ("cancel_workflowrun", "Can cancel workflow run"),
            ("retry_workflowrun", "Can retry workflow run"),
            ("approve_workflowrun", "Can approve steps of workflow run"),
        ]
        indexes = [models.Index(fields=["actor", "status"]), models.Index(fields=["queue_key", "status"]),
                   models.Index(fields=["status", "deadline_at"])]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.flow_slug}"


class StepRun(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for dependencies
        QUEUED = "queued"  # handed to the workers
        RUNNING = "running"  # claimed, under a lease
        RETRYING = "retrying"  # failed an attempt; waits out its backoff (not_before) before re-queueing
        WAITING = "waiting"  # an approval step waiting for a person (lease_until is the deadline)
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        SKIPPED = "skipped"  # a dependency failed or the run was cancelled

    DONE = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.SKIPPED)

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=100)
    action = models.CharField(max_length=50)
    params = models.JSONField(default=dict, blank=True)
    depends_on = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Attempts spent against max_attempts: a claim takes one; a re-delivery after a lost worker or a
    # release on SIGTERM gives it back (the step's own retries are for the step's own failures).
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)
    redeliveries = models.PositiveIntegerField(
        default=0, help_text="re-deliveries after a lost worker in this round (bounded by HMS_STEP_REDELIVERIES)")
    # Every claim takes the next number; the conditional updates of the worker holding the step
    # (heartbeat, success, failure) match on it, so a stale worker never writes over a newer claim
    # (attempts alone can repeat once a lost worker's attempt is given back).
    claims = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=100, blank=True, help_text="host:pid of the worker that claimed it last")
    retries = models.PositiveIntegerField(default=0, help_text="retries per round (a manual retry adds a round)")
    backoff_seconds = models.FloatField(default=1.0, help_text="first retry delay; doubles each attempt")
    optional = models.BooleanField(default=False, help_text="its failure neither fails the run nor blocks dependents")
    timeout_seconds = models.PositiveIntegerField(default=60)
    lease_until = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "id"]
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="unique_step_per_run")]
        indexes = [models.Index(fields=["status", "lease_until"])]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.name}"
