"""fleet's page action: the scale control (full page or the overview's htmx row). The service's
pages join several apps and live in console."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from core.errors import ApiError
from core.http import htmx_partial, redirect_back
from fleet import actions
from fleet.forms import ScaleForm
from fleet.models import Service
from fleet.reconcile import converge_now
from fleet.selectors import service_for, service_row


@login_required
@require_POST
def scale_service(request: HttpRequest, name: str) -> HttpResponse:
    svc = service_for(request.user, name, "scale")
    form = ScaleForm(request.POST)
    if not form.is_valid():
        return _reply(request, svc, error=" ".join(form.errors["instances"]))
    count = form.cleaned_data["instances"]
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
        return render(request, "fleet/_service_row.html", {"row": service_row(request.user, svc, message, error)})
    (messages.error if error else messages.success)(request, error or message)
    return redirect_back(request, "overview")
