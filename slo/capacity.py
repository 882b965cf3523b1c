"""Capacity incidents: a service running fewer instances than desired for longer than
HMS_CAPACITY_GRACE_SECONDS (a lost Swarm node whose replicas found no room, a crash loop, an
engine refusing to start) opens an incident and alerts; it resolves when the count is back.

A scale-up or a fail-over is below desired for a few seconds as a matter of course: the grace
period is what tells that from lost capacity. Since when a service is short is kept by the job
(the monitor loop's leader): a new leader starts counting afresh, which delays an incident by at
most one grace period and never opens a wrong one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from fleet.models import Instance, Service
from slo import actions
from slo.models import Incident


def capacity_step(desired: int, running: int, short_since: datetime | None, now: datetime, grace: float,
                  incident_open: bool) -> tuple[str | None, datetime | None]:
    """(what to do: "open", "resolve" or None; since when the service is short now) — pure."""
    if running >= desired:
        return ("resolve" if incident_open else None), None
    since = short_since or now
    if not incident_open and (now - since).total_seconds() >= grace:
        return "open", since
    return None, since


class CapacityWatch:
    def __init__(self) -> None:
        self.short_since: dict[int, datetime] = {}

    def __call__(self) -> None:
        now = timezone.now()
        grace = settings.HMS_CAPACITY_GRACE_SECONDS
        rows = Service.objects.annotate(
            running=Count("instances", filter=Q(instances__state=Instance.State.RUNNING))
        ).values_list("id", "desired_instances", "running")
        open_ = {inc.service_id: inc for inc in Incident.objects.filter(
            kind=Incident.Kind.CAPACITY, status__in=Incident.ACTIVE)}
        seen = set()
        for svc_id, desired, running in rows:
            seen.add(svc_id)
            step, since = capacity_step(desired, running, self.short_since.get(svc_id), now, grace, svc_id in open_)
            if since is None:
                self.short_since.pop(svc_id, None)
            else:
                self.short_since[svc_id] = since
            evidence: dict[str, Any] = {"desired": desired, "running": running}
            if step == "open":
                service = Service.objects.get(pk=svc_id)
                evidence["short_since"] = since.isoformat() if since else None
                actions.open_incident(service, kind=Incident.Kind.CAPACITY, severity=Incident.Severity.PAGE,
                                      title=f"{service.name}: {running} of {desired} instances running",
                                      evidence=evidence, actor="system:capacity")
            elif step == "resolve":
                actions.resolve_incident(open_[svc_id], evidence=evidence, actor="system:capacity")
        for gone in set(self.short_since) - seen:
            self.short_since.pop(gone, None)
