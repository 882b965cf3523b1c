"""The preflight partial: what enforce() would answer right now, shown beside the scale and launch
controls as the user types a count or picks a flow (htmx hx-get), before anything is clicked.

Policies sit below services and workflows (imports point down), so the targets are looked up by
app label and read through the same choke point (core.permissions) as every other view; the
context passed to enforce() is the one fleet.actions.scale_service / workflows.actions.start_run
pass. Nothing is written: a preflight is a dry run.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlparse

from django.apps import apps
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render, resolve_url
from django.views.decorators.http import require_GET

from core.http import json_error
from core.permissions import get_for_user
from policies.enforce import Decision, enforce


def _bad(request: HttpRequest, detail: str) -> HttpResponse:
    if getattr(request, "htmx", False):
        # htmx swaps only 2xx by default: answer 200 so the hint replaces a stale verdict.
        return render(request, "policies/_preflight.html", {"invalid": detail})
    return json_error(400, "invalid_request", detail)


def _target(model_label: str, user: Any, action: str, noun: str, **lookup: Any) -> Any:
    model = apps.get_model(model_label)
    try:
        return get_for_user(model.objects.all(), user, action, **lookup)
    except Http404:
        raise Http404(f"No {noun} '{next(iter(lookup.values()))}'.") from None


@require_GET
def preflight(request: HttpRequest) -> HttpResponse:
    user = request.user
    if not (user.is_authenticated and user.is_active):
        if getattr(request, "htmx", False):
            # The session ended while the page stayed open: send the whole page to sign-in rather
            # than swap the sign-in form into the little verdict slot.
            current = urlparse(request.headers.get("HX-Current-URL", "")).path or "/"
            response = HttpResponse("Sign in again.", status=401, content_type="text/plain")
            response["HX-Redirect"] = f"{resolve_url(settings.LOGIN_URL)}?{urlencode({'next': current})}"
            return response
        return redirect_to_login(request.get_full_path())
    action = request.GET.get("action", "")
    decision: Decision
    if action == "scale":
        svc = _target("fleet.Service", request.user, "scale", "service", name=request.GET.get("service", ""))
        raw = request.GET.get("instances", "").strip()
        try:
            requested = int(raw)
        except ValueError:
            return _bad(request, "Enter a whole number of instances.")
        if not 0 <= requested <= settings.HMS_MAX_INSTANCES:
            return _bad(request, f"Instances must be between 0 and {settings.HMS_MAX_INSTANCES}.")
        decision = enforce(request.user, "scale", svc, service_id=svc.pk, service=svc.name,
                           current=svc.desired_instances,
                           requested=requested, last_scaled_at=svc.last_scaled_at)
        subject = f"{svc.name}: {svc.desired_instances} → {requested}"
    elif action == "run":
        flow = _target("workflows.WorkflowDefinition", request.user, "run", "flow",
                       slug=request.GET.get("flowId", ""))
        if not flow.enabled:
            return _bad(request, f"Flow {flow.slug} is disabled.")
        decision = enforce(request.user, "run", flow, flow=flow.slug, tags=flow.tags)
        subject = f"run {flow.slug}"
    else:
        return _bad(request, "action must be 'scale' or 'run'.")
    if not getattr(request, "htmx", False) and "application/json" in request.headers.get("Accept", ""):
        return JsonResponse(decision.as_dict() | {"dryRun": True, "status": decision.status})
    return render(request, "policies/_preflight.html", {"decision": decision, "subject": subject})
