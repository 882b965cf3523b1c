from __future__ import annotations

from django.db import models


class AuditEntry(models.Model):
    """One administrative action. Append-only: a database trigger refuses UPDATE and DELETE.

    `seq` orders the chain; `hash` covers this entry's canonical encoding and `prev_hash`, so an
    edit, a deletion or a reordering breaks every hash after it (see audit.chain.verify).
    """

    class Outcome(models.TextChoices):
        SUCCESS = "success"
        DENIED = "denied"
        ERROR = "error"

    seq = models.BigIntegerField(unique=True)
    created_at = models.DateTimeField()
    actor = models.CharField(max_length=150, help_text="username, or system:<component>")
    actor_user_id = models.BigIntegerField(null=True, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=200, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    ip = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    token_id = models.BigIntegerField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-seq"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["target_type", "target_id", "-seq"])]

    def __str__(self) -> str:
        return f"#{self.seq} {self.actor} {self.action} {self.target_type}:{self.target_id} {self.outcome}"
