"""Flows and runs through the permission choke point, shared by the pages and the REST API."""

from __future__ import annotations

from typing import Any

from django.http import Http404

from core.permissions import get_for_user
from workflows.models import WorkflowDefinition, WorkflowRun


def flow_for(user: Any, slug: str, action: str = "view") -> WorkflowDefinition:
    try:
        return get_for_user(WorkflowDefinition.objects.filter(enabled=True), user, action, slug=slug)
    except Http404:
        raise Http404(f"No flow with id '{slug}'.") from None


def run_for(user: Any, run_id: int, action: str = "view") -> WorkflowRun:
    try:
        return get_for_user(WorkflowRun.objects.select_related("actor"), user, action, pk=run_id)
    except Http404:
        raise Http404(f"No run {run_id}.") from None


def active_runs(*, user_id: int | None, flow: str | None, tag: str | None) -> int:
    """Runs holding a quota slot: pending or running (a dead worker's run stays active until its
    lease is swept, then it fails and frees the slot)."""
    qs = WorkflowRun.objects.filter(status__in=WorkflowRun.ACTIVE)
    if user_id is not None:
        qs = qs.filter(actor_id=user_id)
    if flow:
        qs = qs.filter(flow_slug=flow)
    if tag:
        qs = qs.filter(tag_list__contains=f",{tag},")
    return qs.count()

