"""Reads of health state shared by pages, the API, the probes and the apps above (slo,
autoscaling). The one "in maintenance" query lives here."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from health.models import MaintenanceWindow


def _active(at: datetime | None) -> QuerySet[MaintenanceWindow]:
    at = at or timezone.now()
    return MaintenanceWindow.objects.filter(starts_at__lte=at, ends_at__gt=at)


def maintenance_window(service_id: int, at: datetime | None = None) -> MaintenanceWindow | None:
    """The window in force for this service at `at` (now), or None."""
    return _active(at).filter(service_id=service_id).first()


def in_maintenance(service_ids: Iterable[int], at: datetime | None = None) -> set[int]:
    """Which of these services are in maintenance at `at` (now): one query for a batch."""
    return set(_active(at).filter(service_id__in=list(service_ids)).values_list("service_id", flat=True))
