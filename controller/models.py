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
    passes = models.PositiveBigIntegerField(default=0)  # passes it ran (as the loop's leader)
    # Whether this process leads the loop (controller.leader: the lease PostgreSQL arbitrates) or
    # stands by, and since when it leads. Written on each change, not with every beat, and a new
    # leader clears the flag of the one it replaced in the same transaction: at any moment at most
    # one row of a loop says leader (a row left by a killed leader says so until then).
    leader = models.BooleanField(default=False)
    since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["loop", "host", "pid"]
        constraints = [models.UniqueConstraint(fields=["host", "pid", "loop"], name="unique_loop_beat")]

    def __str__(self) -> str:
        role = "leader" if self.leader else "standby"
        return f"{self.loop} ({role}) on {self.host}:{self.pid} at {self.beat_at:%H:%M:%S} ({self.last_pass_ms:.0f} ms)"
