from __future__ import annotations

from django.conf import settings
from django.db import models

from schedules import cadence
from workflows.models import WorkflowDefinition, WorkflowRun


class Schedule(models.Model):
    """Fires runs of a flow on a cron expression or an interval, as its owner would start them."""

    class Missed(models.TextChoices):
        SKIP = cadence.SKIP, "skip missed fires"
        ONCE = cadence.ONCE, "run once for all missed fires"
        EACH = cadence.EACH, "run each missed fire (up to the bound)"

    class Overlap(models.TextChoices):
        SKIP = "skip", "skip while the previous run is active"
        QUEUE = "queue", "hold the fire until the previous run finishes"
        ALLOW = "allow", "start anyway"

    owner_field = "owner"  # the choke point lets a schedule's owner act on it

    flow = models.ForeignKey(WorkflowDefinition, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=100, blank=True)
    cron = models.CharField(max_length=200, blank=True, help_text="5 fields, or 6 with seconds last")
    interval_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="aligned to the Unix epoch")
    timezone = models.CharField(max_length=64, default="UTC")
    data = models.JSONField(default=dict, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    enabled = models.BooleanField(default=True)
    missed_policy = models.CharField(max_length=8, choices=Missed.choices, default=Missed.ONCE)
    missed_bound = models.PositiveIntegerField(default=10, help_text="at most this many missed fires are run")
    overlap_policy = models.CharField(max_length=8, choices=Overlap.choices, default=Overlap.SKIP)
    # A deadline spec for the runs it starts, replacing the flow's (workflows.deadlines:
    # {"within_seconds": 1800} or {"by": "06:00", "tz": "Europe/Berlin"}); null: the flow's, if any.
    deadline = models.JSONField(null=True, blank=True)
    # The earliest instant not yet fired (null while paused). The controller claims a fire with
    # UPDATE … SET next_fire_at=<next> WHERE id=… AND next_fire_at=<due>: one winner, ever.
    next_fire_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_fire_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=16, blank=True)
    last_reason = models.CharField(max_length=500, blank=True)
    last_run = models.ForeignKey(WorkflowRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["flow", "id"]

    def __str__(self) -> str:
        return f"schedule {self.pk} of {self.flow.slug}" + (f" ({self.name})" if self.name else "")

    def cadence(self) -> cadence.Cadence:
        return cadence.Cadence(cron=self.cron, interval=self.interval_seconds, tz=self.timezone)

    @property
    def spec(self) -> str:
        return self.cron if self.cron else f"every {self.interval_seconds} s"


class ScheduleFire(models.Model):
    """One scheduled instant and what became of it (bounded: HMS_SCHEDULE_FIRES_KEPT per schedule)."""

    class Outcome(models.TextChoices):
        STARTED = "started"
        DENIED = "denied"  # the owner's start was refused: quota, policy, permission
        SKIPPED = "skipped"  # overlap policy skip, or a fire already held
        HELD = "held"  # overlap policy queue: waits for the previous run to finish
        MISSED = "missed"  # instants the missed-fires policy dropped (one row for all of them)

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="fires")
    scheduled_for = models.DateTimeField()
    fired_at = models.DateTimeField()
    run = models.ForeignKey(WorkflowRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-scheduled_for"]
        # The second guard beside the claim: one row per scheduled instant, whatever happens.
        constraints = [models.UniqueConstraint(fields=["schedule", "scheduled_for"], name="one_fire_per_instant")]
        indexes = [models.Index(fields=["outcome"])]

    def __str__(self) -> str:
        return f"{self.schedule_id}@{self.scheduled_for.isoformat()} {self.outcome}"
