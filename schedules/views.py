"""The flow page (its schedules, their next fires and last fires, its run history) and the schedule
forms behind it. Views only translate HTTP: schedules.actions changes state."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core.permissions import can, can_many
from schedules import actions, selectors
from schedules.cadence import Invalid
from schedules.forms import ScheduleForm
from schedules.models import Schedule
from workflows import dag
from workflows.history import chart, flow_stats
from workflows.models import WorkflowDefinition
from workflows.selectors import flow_for


def _owner(form: ScheduleForm, request: HttpRequest, default: Any) -> Any:
    name = form.cleaned_data.get("owner") or ""
    if not name or name == getattr(default, "username", None):
        return default
    user = get_user_model().objects.filter(username=name).first()
    if user is None:
        raise Invalid("owner", f"No user '{name[:150]}'.")
    return user


def _flow_context(request: HttpRequest, flow: WorkflowDefinition, form: ScheduleForm | None = None,
                  editing: Schedule | None = None) -> dict[str, Any]:
    schedules = list(selectors.of_flow(flow))
    fires = selectors.last_fires(schedules)
    manage = {"change": can_many(request.user, "change", schedules),
              "delete": can_many(request.user, "delete", schedules)}
    rows = []
    for s in schedules:
        c = s.cadence()
        rows.append({"s": s, "fires": fires[s.pk], "may_change": s.pk in manage["change"],
                     "may_delete": s.pk in manage["delete"],
                     # Formatted here: the template's date filter would show the console's zone.
                     "upcoming": [(c.local(t).strftime("%Y-%m-%d %H:%M:%S %Z"), t.strftime("%H:%M:%S"))
                                  for t in selectors.upcoming(s)]})
    stats = flow_stats(flow.slug)
    return {
        "flow": flow,
        "levels": dag.levels(flow.steps),
        "rows": rows,
        "may_schedule": can(request.user, "run", flow),
        "is_admin": request.user.is_superuser,
        "form": form or ScheduleForm(),
        "editing": editing,
        "stats": stats,
        "chart": chart(stats["runs"]),
    }


@login_required
def flow_detail(request: HttpRequest, flow_id: str) -> HttpResponse:
    flow = flow_for(request.user, flow_id)
    return render(request, "schedules/flow_detail.html", _flow_context(request, flow))


def _refused(request: HttpRequest, flow: WorkflowDefinition, form: ScheduleForm, exc: Invalid | None,
             editing: Schedule | None = None) -> HttpResponse:
    if exc is not None:
        form.add_error(exc.field if exc.field in form.fields else None, exc.detail)
    return render(request, "schedules/flow_detail.html", _flow_context(request, flow, form, editing), status=400)


@login_required
@require_POST
def schedule_create(request: HttpRequest, flow_id: str) -> HttpResponse:
    flow = flow_for(request.user, flow_id, "run")  # 404/403 before the form is judged
    form = ScheduleForm(request.POST)
    if not form.is_valid():
        return _refused(request, flow, form, None)
    try:
        s = actions.create_schedule(flow, form.fields_for_action(), owner=_owner(form, request, request.user),
                                    actor=request.user)
    except Invalid as exc:
        if exc.field == "interval":
            exc.field = "interval_seconds"
        return _refused(request, flow, form, exc)
    messages.success(request, f"Schedule {s.pk} created; next fire {s.next_fire_at:%Y-%m-%d %H:%M:%S} UTC.")
    return redirect("flow-detail", flow_id=flow.slug)


@login_required
def schedule_edit(request: HttpRequest, schedule_id: int) -> HttpResponse:
    s = selectors.schedule_for(request.user, schedule_id, "change")
    if request.method != "POST":
        return render(request, "schedules/flow_detail.html", _flow_context(request, s.flow, ScheduleForm.of(s), s))
    form = ScheduleForm(request.POST)
    if not form.is_valid():
        return _refused(request, s.flow, form, None, s)
    fields = form.fields_for_action()
    try:
        owner = _owner(form, request, s.owner)
        actions.update_schedule(s, fields, actor=request.user, owner=owner)
    except Invalid as exc:
        if exc.field == "interval":
            exc.field = "interval_seconds"
        return _refused(request, s.flow, form, exc, s)
    messages.success(request, f"Schedule {s.pk} saved.")
    return redirect("flow-detail", flow_id=s.flow.slug)


def _toggle(request: HttpRequest, schedule_id: int, enabled: bool) -> HttpResponse:
    s = selectors.schedule_for(request.user, schedule_id, "change")
    if actions.set_enabled(s, enabled, actor=request.user):
        messages.success(request, f"Schedule {s.pk} {'resumed' if enabled else 'paused'}.")
    else:
        messages.error(request, f"Schedule {s.pk} was already {'running' if enabled else 'paused'}.")
    return redirect("flow-detail", flow_id=s.flow.slug)


@login_required
@require_POST
def schedule_pause(request: HttpRequest, schedule_id: int) -> HttpResponse:
    return _toggle(request, schedule_id, False)


@login_required
@require_POST
def schedule_resume(request: HttpRequest, schedule_id: int) -> HttpResponse:
    return _toggle(request, schedule_id, True)


@login_required
@require_POST
def schedule_delete(request: HttpRequest, schedule_id: int) -> HttpResponse:
    s = selectors.schedule_for(request.user, schedule_id, "delete")
    slug = s.flow.slug
    actions.delete_schedule(s, actor=request.user)
    messages.success(request, f"Schedule {schedule_id} deleted.")
    return redirect("flow-detail", flow_id=slug)


