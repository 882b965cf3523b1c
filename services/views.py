"""Service pages: detail with live instances table, and the scale control (full page or htmx row)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from audit.models import AuditEntry
from hmsmgmt.http import redirect_back
from policies.access import can, restrict
from policies.errors import ApiError
from services import actions, reconcile
from services.api import converge_now, service_for
from services.models import Instance, Service


def htmx_partial(request: HttpRequest) -> bool:
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted


def service_rows(user: Any) -> list[dict[str, Any]]:
    return [row(user, svc) for svc in restrict(Service.objects.all(), user)]


def row(user: Any, svc: Service, message: str = "", error: str = "") -> dict[str, Any]:
    return {"service": svc, "status": reconcile.status(svc), "can_scale": can(user, "scale", svc),
            "message": message, "error": error}


@login_required
def service_detail(request: HttpRequest, name: str) -> HttpResponse:
    svc = service_for(request.user, name)
    context = {
        "service": svc,
        "status": reconcile.status(svc),
        "instances": svc.instances.filter(state__in=Instance.LIVE_STATES + (Instance.State.STOPPING,)),
        "recent_instances": svc.instances.exclude(state__in=Instance.LIVE_STATES).order_by("-id")[:10],
        "can_scale": can(request.user, "scale", svc),
        "events": AuditEntry.objects.filter(target_type="services.service", target_id=str(svc.pk))[:20],
    }
    if htmx_partial(request):
        return render(request, "services/_instances.html", context)
    return render(request, "services/detail.html", context)


@login_required
@require_POST
def scale_service(request: HttpRequest, name: str) -> HttpResponse:
    svc = service_for(request.user, name, "scale")
    try:
        count = int(request.POST.get("instances", ""))
    except ValueError:
        count = -1
    if (problem := actions.count_error(count)) is not None:
        return _reply(request, svc, error=problem)
    outcome = actions.scale_service(svc, count, actor=request.user)
    if not outcome.decision.allowed:
        return _reply(request, svc, error=outcome.decision.detail)
    try:
        converge_now(svc, wait=False)
    except ApiError as exc:
        return _reply(request, svc, error=exc.detail)
    return _reply(request, svc, message=f"Scaled {svc.name} to {count}.")


def _reply(request: HttpRequest, svc: Service, *, message: str = "", error: str = "") -> HttpResponse:
    svc.refresh_from_db()
    if htmx_partial(request):
        # htmx swaps only 2xx by default; a refusal is shown in the row itself, so answer 200.
        return render(request, "hmsmgmt/_service_row.html", {"row": row(request.user, svc, message, error)})
    (messages.error if error else messages.success)(request, error or message)
    return redirect_back(request, "overview")
