"""The console's own worker processes, as the system page shows them."""

from __future__ import annotations

from django.db import models


class WorkerBeat(models.Model):
    """One row per running django-q2 worker process (console/workers.py), refreshed every few
    seconds: which cluster (queue) it serves, whether it is running a task, how many it ran."""

    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    cluster = models.CharField(max_length=100)
    started_at = models.DateTimeField()
    beat_at = models.DateTimeField()
    busy = models.BooleanField(default=False)
    tasks = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["cluster", "host", "pid"]
        constraints = [models.UniqueConstraint(fields=["host", "pid"], name="unique_worker_beat")]

    def __str__(self) -> str:
        return f"{self.cluster} worker {self.host}:{self.pid}"
