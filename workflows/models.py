from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from core.numbers import validate_finite
from core.permissions import RestrictedQuerySet

FLOW_ID_VALIDATOR = RegexValidator(r"^[A-Za-z][A-Za-z0-9_-]{0,99}$", "A flow id is a slug like exportPatientData.")


def check_approvers(steps: Any) -> None:
    """The groups and permissions approval steps name must exist (a typo would otherwise leave an
    approval nobody may decide); refused naming the step. Shape is checked first by dag."""
    for step in steps if isinstance(steps, list) else []:
        approvers = step.get("approvers") if isinstance(step, dict) else None
        if not isinstance(approvers, dict):
            continue
        group, perm = approvers.get("group"), approvers.get("permission")
        if isinstance(group, str) and not Group.objects.filter(name=group).exists():
            raise ValidationError({"steps": f"step '{step.get('name')}': approvers.group: no group named {group!r}"})
        if isinstance(perm, str) and "." in perm:
            app, _, code = perm.partition(".")
            if not Permission.objects.filter(content_type__app_label=app, codename=code).exists():
                raise ValidationError({"steps": f"step '{step.get('name')}': approvers.permission: no permission "
                                                f"{perm!r}"})


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
        check_approvers(self.steps)
        try:
            validate_deadline(self.deadline)
        except ValueError as exc:
            raise ValidationError({"deadline": str(exc)}) from None


class WorkflowRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"  # waiting in a queueing quota's queue: holds no slot, no step has started
        PENDING = "pending"
        RUNNING = "running"
        PAUSED = "paused"  # no pending step starts until resumed; steps already running finish
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    # Not finished, holding its quota slot. A paused run is active (it will go on), but its steps
    # are not claimed: RUNNABLE is what a worker may claim a step of. A queued run holds no slot.
    ACTIVE = (Status.PENDING, Status.RUNNING, Status.PAUSED)
    RUNNABLE = (Status.PENDING, Status.RUNNING)
    UNFINISHED = (Status.QUEUED, *ACTIVE)  # may still change (cancellable)
    owner_field = "actor"  # the choke point lets a run's owner see it

    definition = models.ForeignKey(WorkflowDefinition, on_delete=models.PROTECT, related_name="runs")
    flow_slug = models.CharField(max_length=100, db_index=True)
    # ",tag1,tag2," so a quota can count runs by tag with one indexed LIKE on any database.
    tag_list = models.CharField(max_length=300, blank=True)
    data = models.JSONField(default=dict, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    # Whose rights the steps act with (scale steps, policy exemptions): the starter, until someone
    # else retries the run; then the retrier, who was checked when they clicked. Null: the starter.
    acting_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+", help_text="the user the steps act as (the last retrier)")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    paused_at = models.DateTimeField(null=True, blank=True)
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
            ("pause_workflowrun", "Can pause and resume workflow run"),
        ]
        indexes = [models.Index(fields=["actor", "status"]), models.Index(fields=["queue_key", "status"]),
                   models.Index(fields=["status", "deadline_at"])]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.flow_slug}"

    @property
    def acting_as(self) -> object:
        """The user the steps act as (see acting_user)."""
        return self.acting_user if self.acting_user_id else self.actor


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
    backoff_seconds = models.FloatField(default=1.0, validators=[validate_finite],
                                        help_text="first retry delay; doubles each attempt")
    optional = models.BooleanField(default=False, help_text="its failure neither fails the run nor blocks dependents")
    # all_success (default) | all_done | one_failed: see workflows.dag.dependency_state. A step with
    # another rule than all_success is not required (like an optional one).
    trigger_rule = models.CharField(max_length=16, default="all_success")
    # approval steps: who may decide ({"group": name, "permission": "app.codename"}, either or both)
    # and whether the run's starter may decide it themselves (four eyes unless true).
    approvers = models.JSONField(default=dict, blank=True)
    allow_self_approval = models.BooleanField(default=False)
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
        indexes = [
            models.Index(fields=["status", "lease_until"]),
            # The controller's twice-a-second look for retries whose back-off has passed
            # (workflows.sweeps): only retrying steps, ordered by when they may run again.
            models.Index(fields=["not_before"], condition=models.Q(status="retrying"), name="steprun_retry_due"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.name}"
