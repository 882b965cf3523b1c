from __future__ import annotations

from django.db import models
from django.db.models import Q


class AuditEntry(models.Model):
    """One administrative action. Append-only: a database trigger refuses DELETE, TRUNCATE and
    every UPDATE except the one-time sealing of an unsealed row.

    Writers insert concurrently with `seq`, `prev_hash` and `hash` empty; the sealer
    (audit.sealer) then gives committed entries their place in the chain, in batches, within a
    second. `id` is the insertion order (stable, used for display and keyset pagination); `seq` is
    the chain order. An edit, deletion or reordering of sealed entries breaks the chain from that
    entry on (see audit.chain.verify_entries); signed checkpoints catch a cut tail.
    """

    class Outcome(models.TextChoices):
        SUCCESS = "success"
        DENIED = "denied"
        ERROR = "error"

    seq = models.BigIntegerField(unique=True, null=True, blank=True, help_text="chain position; empty until sealed")
    created_at = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=150, help_text="username, or system:<component>")
    actor_user_id = models.BigIntegerField(null=True, blank=True)
    action = models.CharField(max_length=64)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=200, blank=True)
    target_repr = models.CharField(max_length=200, blank=True, help_text="the target's name when recorded")
    payload = models.JSONField(default=dict, blank=True)
    ip = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    token_id = models.BigIntegerField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    # sha256 of what the entry says (audit.chain.content_digest), computed by record() in the
    # writing transaction: an edit made before the sealer links the entry into the chain no longer
    # matches it. Empty on entries written before it existed.
    content_hash = models.CharField(max_length=64, blank=True, default="")
    prev_hash = models.CharField(max_length=64, blank=True, default="")
    hash = models.CharField(max_length=64, blank=True, default="")
    sealed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Insertion order: stable before and after sealing (seq is empty until the sealer runs).
        ordering = ["-id"]
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["target_type", "target_id", "-id"], name="audit_target_id_idx"),
            models.Index(fields=["actor", "-id"], name="audit_actor_id_idx"),
            models.Index(fields=["action", "-id"], name="audit_action_id_idx"),
            # The sealer's work queue: tiny, because entries leave it within a second.
            models.Index(fields=["id"], condition=Q(seq__isnull=True), name="audit_unsealed_idx"),
        ]

    def __str__(self) -> str:
        num = f"#{self.seq}" if self.seq is not None else f"(pending id {self.id})"
        return f"{num} {self.actor} {self.action} {self.target_type}:{self.target_id} {self.outcome}"

    @property
    def sealed(self) -> bool:
        return self.seq is not None

    @property
    def number(self) -> str:
        """What pages show: the chain sequence, or "pending" until the sealer has run."""
        return str(self.seq) if self.seq is not None else "pending"


class AuditCheckpoint(models.Model):
    """Append-only like the entries (audit.triggers; the runtime role may only INSERT).

    A signed statement "the log had `count` sealed entries, ending at `last_seq` with
    `last_hash`", also exported off the box. A chain alone cannot show that its tail was cut; a
    checkpoint kept elsewhere can."""

    created_at = models.DateTimeField()
    last_seq = models.BigIntegerField()
    last_hash = models.CharField(max_length=64)
    count = models.BigIntegerField()
    alg = models.CharField(max_length=32)
    key_id = models.CharField(max_length=64, blank=True)
    signature = models.TextField()
    exported_to = models.CharField(max_length=500, blank=True)
    webhook_status = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"checkpoint seq {self.last_seq} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class AuditVerification(models.Model):
    """A "Verify chain" run started from the audit page (inline for small logs, else a task).

    Append-only but for its own progress: the trigger lets a queued or running verification record
    its progress and result, once; a finished one never changes, and none is ever deleted."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        INTACT = "intact"
        BROKEN = "broken"
        FAILED = "failed"

    requested_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    checked = models.BigIntegerField(default=0)
    last_seq = models.BigIntegerField(null=True, blank=True)
    bad_seq = models.BigIntegerField(null=True, blank=True)
    pending = models.BigIntegerField(default=0)
    problem = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"verification {self.pk} {self.status}"


class RefusalBucket(models.Model):
    """The counter behind bounded refusal auditing (audit.refusals): one row per source (client
    address + actor), kind (401, 403, 404 by design, 429) and minute. The first refusal of a bucket
    writes an audit entry; the rest only add to `count` here, and when the minute has closed the
    sealer job writes one access.refused_repeated entry with the total and deletes the row.

    Not part of the chain and not append-only: it is a working counter that lives for about a
    minute. The evidence is the entries (the first refusal and the summary)."""

    minute = models.DateTimeField(help_text="start of the minute the refusals fall in")
    status = models.PositiveSmallIntegerField(help_text="401, 403, 404 (hidden object) or 429")
    ip = models.CharField(max_length=64, blank=True)
    actor = models.CharField(max_length=150, help_text="username, or anonymous")
    actor_user_id = models.BigIntegerField(null=True, blank=True)
    count = models.BigIntegerField(default=1, help_text="refusals in this bucket, the first included")
    first_entry = models.BigIntegerField(null=True, blank=True, help_text="id of the entry of the first refusal")
    last_path = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["minute", "id"]
        constraints = [
            models.UniqueConstraint(fields=["minute", "status", "ip", "actor"], name="audit_refusal_bucket_key"),
        ]

    def __str__(self) -> str:
        return f"{self.status} from {self.ip or '?'} as {self.actor} at {self.minute:%H:%M}: {self.count}"
