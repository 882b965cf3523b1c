"""What each running controller loop last did, so other processes can tell: the metrics, the
console's health check (`manage.py healthcheck controller`) and the system page read it."""

from __future__ import annotations

from django.db import models


class LoopBeat(models.Model):
    """One row per loop of a running controller process, refreshed at most once a second."""

    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    loop = models.CharField(max_length=20)
    started_at = models.DateTimeField()
    beat_at = models.DateTimeField()  # the end of its latest pass
    last_pass_ms = models.FloatField()  # how long that pass took
    passes = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["loop", "host", "pid"]
        constraints = [models.UniqueConstraint(fields=["host", "pid", "loop"], name="unique_loop_beat")]

    def __str__(self) -> str:
        return f"{self.loop} on {self.host}:{self.pid} at {self.beat_at:%H:%M:%S} ({self.last_pass_ms:.0f} ms)"
