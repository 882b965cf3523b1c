"""Workflow pages: runs list with filters, launch, run detail (live while active), cancel."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from policies.access import can, restrict
from workflows import actions
from workflows.api import flow_for, run_for
from workflows.models import WorkflowDefinition, WorkflowRun


def htmx_partial(request: HttpRequest) -> bool:
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    qs = restrict(WorkflowRun.objects.select_related("actor"), request.user).order_by("-id")
    status, flow = request.GET.get("status", ""), request.GET.get("flow", "")
    if status:
        qs = qs.filter(status=status)
    if flow:
        qs = qs.filter(flow_slug=flow)
    context = {
        "page": Paginator(qs, 25).get_page(request.GET.get("page")),
        "status": status,
        "flow": flow,
        "statuses": WorkflowRun.Status.values,
        "flows": restrict(WorkflowDefinition.objects.filter(enabled=True), request.user, "run"),
    }
    if htmx_partial(request):
        return render(request, "workflows/_runs.html", context)
    return render(request, "workflows/runs.html", context)


@login_required
@require_POST
def launch_run(request: HttpRequest) -> HttpResponse:
    flow = flow_for(request.user, request.POST.get("flowId", ""), "run")
    try:
        data = json.loads(request.POST.get("data") or "{}")
        if not isinstance(data, dict):
            raise ValueError
    except ValueError:
        messages.error(request, 'Run data must be a JSON object, e.g. {"user": 123}.')
        return redirect("run-list")
    outcome = actions.start_run(flow, data, actor=request.user)
    if not outcome.decision.allowed:
        messages.error(request, outcome.decision.detail)
        return redirect("run-list")
    assert outcome.run is not None
    messages.success(request, f"Started run {outcome.run.pk} of {flow.slug}.")
    return redirect("run-detail", run_id=outcome.run.pk)


@login_required
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_for(request.user, run_id)
    context = {"run": run, "steps": run.steps.all(), "can_cancel": can(request.user, "cancel", run)}
    if htmx_partial(request):
        return render(request, "workflows/_run.html", context)
    return render(request, "workflows/run_detail.html", context)


@login_required
@require_POST
def cancel_run(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_for(request.user, run_id, "cancel")
    if actions.cancel_run(run, actor=request.user):
        messages.success(request, f"Run {run_id} cancelled.")
    else:
        messages.error(request, f"Run {run_id} had already finished.")
    return redirect("run-detail", run_id=run_id)
