"""The overview page. App pages live in each app's views.py; pages joining several apps in
console/service_pages.py."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.http import urlencode

from audit.models import AuditEntry
from audit.selectors import can_view_audit
from console import system
from core.http import htmx_partial
from core.permissions import restrict
from fleet.selectors import ServicePage, service_page
from workflows.models import WorkflowDefinition, WorkflowRun


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    """The overview: one page of services (`?page=`, `?q=` filters by name), recent runs, the
    flows the user may launch and, for auditors, recent audit entries. Each part is a fixed
    number of queries, so the page costs the same with 3 services or 3000. The services table
    polls `?part=services` with the same page and filter."""
    user = request.user
    services = service_page(user, page=request.GET.get("page", 1), q=request.GET.get("q", ""))
    if htmx_partial(request) and request.GET.get("part") == "services":
        return render(request, "console/_services.html", _services_context(services))
    context = {
        **_services_context(services),
        "runs": restrict(WorkflowRun.objects.select_related("actor"), user)[:10],
        "flows": restrict(WorkflowDefinition.objects.filter(enabled=True), user, "run"),
        "audit": AuditEntry.objects.all()[:10] if can_view_audit(user) else None,
    }
    return render(request, "console/overview.html", context)


def _services_context(services: ServicePage) -> dict[str, object]:
    page = services.page
    q = {"q": services.q} if services.q else {}

    def link(number: int) -> str:
        return "?" + urlencode({**q, "page": number})

    return {
        "rows": services.rows,
        "page": page,
        "q": services.q,
        # The poll asks for the page the user is on (as get_page resolved it) with their filter.
        "poll_query": urlencode({"part": "services", **q, "page": page.number}),
        "prev_link": link(page.previous_page_number()) if page.has_previous() else "",
        "next_link": link(page.next_page_number()) if page.has_next() else "",
        # (label, link): the current page and the elisions ("…") have no link.
        "page_links": [(n, link(n) if isinstance(n, int) and n != page.number else "")
                       for n in page.paginator.get_elided_page_range(page.number)]
        if page.paginator.num_pages > 1 else [],
    }


@login_required
def system_page(request: HttpRequest) -> HttpResponse:
    """The console's own state (staff): refreshed in place every 3 s."""
    if not request.user.is_staff:
        raise PermissionDenied("Only staff may see the system state.")
    template = "console/_system.html" if htmx_partial(request) else "console/system.html"
    return render(request, template, {"system": system.status()})
