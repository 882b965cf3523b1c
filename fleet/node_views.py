"""The nodes page (/nodes/): the swarm's nodes, live; drain and activate with a preflight."""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from core.errors import ApiError
from core.http import htmx_partial
from core.permissions import has_perm
from fleet import actions
from fleet.drivers import DriverError, EngineUnavailable
from fleet.nodes import drain_preview, nodes_table
from fleet.selectors import node_for


class AvailabilityForm(forms.Form):
    availability = forms.ChoiceField(choices=[("drain", "drain"), ("active", "active")])
    confirm = forms.BooleanField(required=False)  # unchecked: show the preflight only


@login_required
def nodes_page(request: HttpRequest) -> HttpResponse:
    node_for(request.user, None)
    context = {"nodes": nodes_table(), "may_manage": has_perm(request.user, "fleet.manage_nodes")}
    template = "fleet/_nodes.html" if htmx_partial(request) else "fleet/nodes.html"
    return render(request, template, context)


@login_required
@require_POST
def node_availability(request: HttpRequest, hostname: str) -> HttpResponse:
    node = node_for(request.user, hostname, manage=True)
    form = AvailabilityForm(request.POST)
    if not form.is_valid():
        return _reply(request, node, error="availability must be drain or active")
    availability = form.cleaned_data["availability"]
    preview = drain_preview(node) if availability == "drain" else None
    if not form.cleaned_data["confirm"]:
        return _reply(request, node, preview=preview, availability=availability)
    try:
        actions.set_node_availability(node, availability, actor=request.user)
    except (ApiError, DriverError, EngineUnavailable) as exc:
        return _reply(request, node, error=getattr(exc, "detail", str(exc)))
    done = f"{node.hostname} is draining: {preview.detail}" if preview else f"{node.hostname} takes tasks again"
    return _reply(request, node, message=done)


def _reply(request: HttpRequest, node, *, preview=None, availability: str = "", message: str = "",  # type: ignore[no-untyped-def]
           error: str = "") -> HttpResponse:
    allowed = preview is None or not (preview.blocked or (preview.moves and not preview.room))
    return render(request, "fleet/_node_action.html", {
        "node": node, "preview": preview, "availability": availability, "message": message, "error": error,
        "allowed": allowed})
