"""Workflow pages: flows with a launch form, runs list with filters, run detail (a DAG that updates
live while the run moves) with cancel / retry / approve. Views only translate HTTP; the domain
functions live in workflows.actions."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.http import htmx_partial
from core.permissions import can, restrict
from slo.models import Incident
from workflows import actions, dag, queue
from workflows.deadlines import describe
from workflows.forms import ApprovalForm, BulkForm, LaunchForm
from workflows.models import StepRun, WorkflowDefinition, WorkflowRun
from workflows.selectors import flow_for, run_for


def _launchable(request: HttpRequest):  # type: ignore[no-untyped-def]
    return restrict(WorkflowDefinition.objects.filter(enabled=True), request.user, "run")


@login_required
def flow_list(request: HttpRequest) -> HttpResponse:
    flows = list(restrict(WorkflowDefinition.objects.filter(enabled=True), request.user))
    for f in flows:
        f.levels = dag.levels(f.steps)  # type: ignore[attr-defined]
    return render(request, "workflows/flows.html", {"all_flows": flows, "flows": _launchable(request),
                                                    "selected_flow": request.GET.get("flow", "")})


def _filtered_runs(request: HttpRequest, status: str, flow: str) -> tuple[QuerySet[WorkflowRun], str, str]:
    """The runs list's query: what the user may see, by status and flow (an unknown status: any)."""
    qs = restrict(WorkflowRun.objects.select_related("actor"), request.user).order_by("-id")
    if status in WorkflowRun.Status.values:
        qs = qs.filter(status=status)
    else:
        status = ""
    if flow:
        qs = qs.filter(flow_slug=flow)
    return qs, status, flow


def _list_context(request: HttpRequest, qs: QuerySet[WorkflowRun], status: str, flow: str,
                  page: str | None) -> dict[str, object]:
    shown = Paginator(qs, 25).get_page(page)
    where = queue.places(list(shown.object_list))
    for r in shown.object_list:
        r.place = where.get(r.pk)  # type: ignore[attr-defined]
    return {
        "page": shown,
        "any_queued": bool(where),
        "status": status,
        "flow": flow,
        "statuses": WorkflowRun.Status.values,
        "flows": _launchable(request),
    }


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    qs, status, flow = _filtered_runs(request, request.GET.get("status", ""), request.GET.get("flow", ""))
    context = _list_context(request, qs, status, flow, request.GET.get("page"))
    if htmx_partial(request):
        return render(request, "workflows/_runs.html", context)
    return render(request, "workflows/runs.html", context)


@login_required
@require_POST
def bulk_runs(request: HttpRequest) -> HttpResponse:
    """Cancel or retry the checked runs, or every run matching the list's filter; each run is
    permission-checked and audited on its own (workflows.actions.bulk_runs); the answer counts
    what was done and what was refused, and why."""
    form = BulkForm(request.POST)
    status, flow = request.POST.get("status", ""), request.POST.get("flow", "")
    if not form.is_valid():
        result, ok = " ".join(e for errs in form.errors.values() for e in errs), False
    else:
        data = form.cleaned_data
        qs, status, flow = _filtered_runs(request, data["status"], data["flow"])
        missing: list[int] = []
        if data["scope"] == "selected":
            qs = qs.filter(pk__in=data["runs"])
        runs = list(qs[:actions.BULK_MAX])
        left = qs.count() - len(runs) if len(runs) == actions.BULK_MAX else 0
        if data["scope"] == "selected":
            missing = sorted(set(data["runs"]) - {r.pk for r in runs})
        outcome = actions.bulk_runs(data["op"], runs, actor=request.user, left=left, missing=missing,
                                    scope={"scope": data["scope"], "status": status, "flow": flow,
                                           "runs": data["runs"] if data["scope"] == "selected" else None})
        result, ok = outcome.summary(), not outcome.refused
    if htmx_partial(request):
        qs, status, flow = _filtered_runs(request, status, flow)
        context = _list_context(request, qs, status, flow, None) | {"bulk_result": result, "bulk_ok": ok}
        return render(request, "workflows/_runs.html", context)
    (messages.success if ok else messages.error)(request, result)
    return redirect(f"{reverse('run-list')}?{urlencode({'status': status, 'flow': flow})}")


@login_required
@require_POST
def launch_run(request: HttpRequest) -> HttpResponse:
    flow = flow_for(request.user, request.POST.get("flowId", ""), "run")  # 404/403 before the data is judged
    form = LaunchForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(e for errs in form.errors.values() for e in errs))
        return redirect("run-list")
    data = form.cleaned_data["data"]
    outcome = actions.start_run(flow, data, actor=request.user)
    if outcome.queued:
        assert outcome.run is not None
        messages.success(request, f"Run {outcome.run.pk} of {flow.slug} is queued "
                                  f"({queue.ordinal(outcome.position or 1)} in line): {outcome.decision.detail}")
        return redirect("run-detail", run_id=outcome.run.pk)
    if not outcome.decision.allowed:
        messages.error(request, outcome.decision.detail)
        return redirect("run-list")
    assert outcome.run is not None
    messages.success(request, f"Started run {outcome.run.pk} of {flow.slug}.")
    return redirect("run-detail", run_id=outcome.run.pk)


def _run_context(request: HttpRequest, run: WorkflowRun) -> dict[str, object]:
    steps = {s.name: s for s in run.steps.all()}
    for s in steps.values():
        s.output_text = json.dumps(s.output, indent=2, default=str) if s.output else ""  # type: ignore[attr-defined]
    columns = [[steps[n] for n in level if n in steps]
               for level in dag.levels([{"name": s.name, "depends_on": s.depends_on} for s in steps.values()])]
    active = run.status in WorkflowRun.UNFINISHED  # a queued run's page polls too: its place counts down
    may_approve = any(s.status == StepRun.Status.WAITING for s in steps.values()) and can(request.user, "approve", run)
    if may_approve:
        for s in steps.values():
            if s.status == StepRun.Status.WAITING and s.action == "approval":
                why = actions.approval_refusal(s, run, request.user)
                s.refusal = why.detail if why else ""  # type: ignore[attr-defined]
    may_pause = active and can(request.user, "pause", run)
    return {
        "run": run,
        "place": queue.place(run) if run.status == WorkflowRun.Status.QUEUED else None,
        "deadline_words": describe(run.definition.deadline) if run.deadline_at else "",
        "deadline_missed": run.deadline_incident_id is not None,
        "deadline_incident_status": Incident.objects.filter(pk=run.deadline_incident_id).values_list(
            "status", flat=True).first() if run.deadline_incident_id else "",
        "run_data": json.dumps(run.data, default=str),
        "active": active,
        "steps": list(steps.values()),
        "columns": columns,
        "can_cancel": active and can(request.user, "cancel", run),
        "can_retry": run.status in (WorkflowRun.Status.FAILED, WorkflowRun.Status.CANCELLED)
        and can(request.user, "retry", run),
        "can_approve": may_approve,
        "can_pause": may_pause and run.status in WorkflowRun.RUNNABLE,
        "can_resume": may_pause and run.status == WorkflowRun.Status.PAUSED,
    }


@login_required
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_for(request.user, run_id)
    context = _run_context(request, run)
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


@login_required
@require_POST
def retry_run(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_for(request.user, run_id, "retry")
    try:
        outcome = actions.retry_run(run, actor=request.user)
        if outcome.refused is not None:
            messages.error(request, outcome.refused.detail)
        elif outcome.decision.allowed:
            messages.success(request, f"Run {run_id} retried from {', '.join(outcome.steps) or 'where it stopped'}.")
        else:
            messages.error(request, outcome.decision.detail)
    except actions.Refused as exc:
        messages.error(request, exc.detail)
    return redirect("run-detail", run_id=run_id)


@login_required
@require_POST
def pause_run(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_for(request.user, run_id, "pause")
    try:
        held = actions.pause_run(run, actor=request.user)
        messages.success(request, f"Run {run_id} paused" + (f" ({held} queued step{'s' if held != 1 else ''} held)."
                                                            if held else "."))
    except actions.Refused as exc:
        messages.error(request, exc.detail)
    return redirect("run-detail", run_id=run_id)


@login_required
@require_POST
def resume_run(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_for(request.user, run_id, "pause")
    try:
        actions.resume_run(run, actor=request.user)
        messages.success(request, f"Run {run_id} resumed.")
    except actions.Refused as exc:
        messages.error(request, exc.detail)
    return redirect("run-detail", run_id=run_id)


@login_required
@require_POST
def approve_step(request: HttpRequest, run_id: int, name: str) -> HttpResponse:
    run = run_for(request.user, run_id, "approve")
    form = ApprovalForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose approve or reject.")
        return redirect("run-detail", run_id=run_id)
    approve = form.cleaned_data["approve"]
    try:
        actions.decide_approval(run, name, approve=approve, actor=request.user, comment=form.cleaned_data["comment"])
        messages.success(request, f"Step {name} {'approved' if approve else 'rejected'}.")
    except StepRun.DoesNotExist:
        raise Http404(f"Run {run_id} has no step '{name}'.") from None
    except actions.Refused as exc:
        messages.error(request, exc.detail)
    return redirect("run-detail", run_id=run_id)
