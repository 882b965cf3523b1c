"""The overview page. App pages live in each app's views.py; pages joining several apps in
console/service_pages.py."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from audit.models import AuditEntry
from audit.selectors import can_view_audit
from core.http import htmx_partial
from core.permissions import restrict
from fleet.selectors import service_rows
from workflows.models import WorkflowDefinition, WorkflowRun


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    user = request.user
    if htmx_partial(request) and request.GET.get("part") == "services":
        return render(request, "console/_services.html", {"rows": service_rows(user)})
    context = {
        "rows": service_rows(user),
        "runs": restrict(WorkflowRun.objects.select_related("actor"), user)[:10],
        "flows": restrict(WorkflowDefinition.objects.filter(enabled=True), user, "run"),
        "audit": AuditEntry.objects.all()[:10] if can_view_audit(user) else None,
    }
    return render(request, "console/overview.html", context)
