"""Reads of the fleet shared by the pages and the REST API (neither imports the other): services
through the permission choke point, with their counts."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q
from django.http import Http404

from core.permissions import can, get_for_user
from fleet import reconcile
from fleet.models import Instance, Service


def service_for(user: Any, name: str, action: str = "view", *, with_counts: bool = False) -> Service:
    """The named service through the permission choke point. with_counts: also its running and
    starting instances (live_running, live_starting), read in the same query."""
    qs = Service.objects.all()
    if with_counts:
        qs = qs.annotate(
            live_running=Count("instances", filter=Q(instances__state=Instance.State.RUNNING)),
            live_starting=Count("instances", filter=Q(instances__state=Instance.State.STARTING)),
        )
    try:
        return get_for_user(qs, user, action, name=name)
    except Http404:
        raise Http404(f"No service named '{name}'.") from None


def service_rows(user: Any) -> list[dict[str, Any]]:
    """The overview's rows: each service the user may see with its status and scale right."""
    return [service_row(user, svc) for svc in Service.objects.restrict(user)]


def service_row(user: Any, svc: Service, message: str = "", error: str = "") -> dict[str, Any]:
    return {"service": svc, "status": reconcile.status(svc), "can_scale": can(user, "scale", svc),
            "message": message, "error": error}
