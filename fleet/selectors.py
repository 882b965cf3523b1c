"""Reads of the fleet shared by the pages and the REST API (neither imports the other): services
through the permission choke point, with their counts.

Lists are read in a constant number of queries whatever the fleet size: the counts of running and
starting instances are annotated on the services' own query, and "may scale?" is answered for the
whole page at once (core.permissions.can_many), never per row."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.db.models import Count, Q, QuerySet
from django.http import Http404

from core.permissions import can, can_many, get_for_user, has_perm
from fleet import reconcile
from fleet.models import Instance, Service, SwarmNode

PAGE_SIZE = 50  # the overview's page: enough to scan, small enough to redraw every 3 s


def annotate_counts(qs: QuerySet[Service]) -> QuerySet[Service]:
    """qs with each service's running and starting instances (live_running, live_starting), counted
    in the same query."""
    return qs.annotate(
        live_running=Count("instances", filter=Q(instances__state=Instance.State.RUNNING)),
        live_starting=Count("instances", filter=Q(instances__state=Instance.State.STARTING)),
    )


def service_for(user: Any, name: str, action: str = "view", *, with_counts: bool = False) -> Service:
    """The named service through the permission choke point. with_counts: also its running and
    starting instances (live_running, live_starting), read in the same query."""
    qs = Service.objects.all()
    if with_counts:
        qs = annotate_counts(qs)
    try:
        return get_for_user(qs, user, action, name=name)
    except Http404:
        raise Http404(f"No service named '{name}'.") from None


def visible_services(user: Any, q: str = "") -> QuerySet[Service]:
    """The services the user may see, by name, optionally only those whose name contains q. Not
    annotated: a count over it stays a plain COUNT(*); annotate what you read (annotate_counts)."""
    qs = Service.objects.restrict(user).order_by("name")
    if q:
        qs = qs.filter(name__icontains=q)
    return qs


def status_of(svc: Service) -> reconcile.Status:
    """The status of a service read through annotate_counts (no query of its own)."""
    return reconcile.status(svc, live=(svc.live_running, svc.live_starting))


def service_rows(user: Any, services: Iterable[Service]) -> list[dict[str, Any]]:
    """The overview's rows for services read through annotate_counts: status from the annotated
    counts and the scale right for all of them at once (two queries at most, whatever their number)."""
    services = list(services)
    may_scale = can_many(user, "scale", services)
    return [_row(svc, status_of(svc), svc.pk in may_scale) for svc in services]


@dataclass(frozen=True)
class ServicePage:
    page: Page
    rows: list[dict[str, Any]]
    q: str


def service_page(user: Any, *, page: Any = 1, q: str = "", per_page: int = PAGE_SIZE) -> ServicePage:
    """One page of the overview's services: a COUNT, the page's rows with their counts, and the
    page's scale rights. page is taken as the user typed it: Paginator.get_page turns anything
    that is not a page number into the first page and a number past the end into the last."""
    q = q.strip()
    visible = visible_services(user, q)
    paginator = Paginator(annotate_counts(visible), per_page)
    # The total as a plain COUNT(*): counted over the annotated query it would carry the counts'
    # join and GROUP BY for nothing (they change no number of rows).
    paginator.count = visible.count()
    current = paginator.get_page(page)
    rows = service_rows(user, current.object_list)
    return ServicePage(current, rows, q)


def service_row(user: Any, svc: Service, message: str = "", error: str = "") -> dict[str, Any]:
    """One row on its own (the scale control's reply): its status and scale right, read for it."""
    return _row(svc, reconcile.status(svc), can(user, "scale", svc), message, error)


def _row(svc: Service, status: reconcile.Status, can_scale: bool, message: str = "", error: str = "") -> dict[str, Any]:
    return {"service": svc, "status": status, "can_scale": can_scale, "message": message, "error": error}


def node_for(user: Any, hostname: str | None, *, manage: bool = False) -> Any:
    """The Swarm node of that hostname (None: only check that the user may see nodes). Seeing
    nodes needs fleet.view_swarmnode (operators have it); draining and activating them needs
    fleet.manage_nodes (no group has it: grant it in admin)."""
    if not has_perm(user, "fleet.view_swarmnode"):
        raise PermissionDenied("You may not see the swarm's nodes.")
    if hostname is None:
        return None
    node = SwarmNode.objects.filter(hostname=hostname).first()
    if node is None:
        raise Http404(f"No swarm node named {hostname!r}.")
    if manage and not has_perm(user, "fleet.manage_nodes"):
        raise PermissionDenied("Draining or activating nodes needs the manage_nodes permission.")
    return node
