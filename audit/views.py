"""Audit pages (auditors only): the browser with filters and keyset pagination, an entry's detail
with its diff and hash links, and the "Verify chain" button."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from audit import filters
from audit.actions import request_verification
from audit.chain import entry_hash, hashed_values
from audit.models import AuditCheckpoint, AuditEntry, AuditVerification
from audit.selectors import can_view_audit
from audit.verify import oldest_pending_age, run_verification
from core.http import htmx_partial


def _require_auditor(request: HttpRequest) -> None:
    if not can_view_audit(request.user):
        raise PermissionDenied("Only auditors may read the audit log.")


def _pretty(value: Any) -> str:
    if value == "":
        return "(empty)"
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def diff_rows(payload: Any) -> list[dict[str, str]]:
    """Field-level before → after from payload["changes"] ({field: [before, after]} or
    {field: {"before", "after"}}), or a top-level {"from", "to"} (scale)."""
    rows: list[dict[str, str]] = []
    if not isinstance(payload, dict):
        return rows
    changes = payload.get("changes")
    if isinstance(changes, dict):
        for name, change in changes.items():
            if isinstance(change, (list, tuple)) and len(change) == 2:
                before, after = change
            elif isinstance(change, dict) and ("before" in change or "after" in change):
                before, after = change.get("before"), change.get("after")
            elif isinstance(change, dict) and ("old" in change or "new" in change):
                before, after = change.get("old"), change.get("new")
            else:
                before, after = None, change
            rows.append({"field": str(name), "before": _pretty(before), "after": _pretty(after)})
    elif "from" in payload and "to" in payload:
        rows.append({"field": "value", "before": _pretty(payload["from"]), "after": _pretty(payload["to"])})
    return rows


@login_required
def audit_list(request: HttpRequest) -> HttpResponse:
    _require_auditor(request)
    error = ""
    try:
        f = filters.parse(request.GET)
        entries, older, newer = filters.page(AuditEntry.objects.all(), f)
    except filters.FilterError as exc:
        # Show the form as typed, with the error, and no rows.
        f = filters.AuditFilter({k: str(request.GET.get(k, "")) for k in filters.FILTER_NAMES})
        entries, older, newer, error = [], None, None, str(exc)
    context = {
        "entries": entries,
        "filter": f,
        "error": error,
        "older_qs": f.query_string(before=older) if older else "",
        "newer_qs": f.query_string(after=newer) if newer else "",
        "export_qs": f.query_string(),
        "outcomes": AuditEntry.Outcome.values,
        "actions": _known_actions(),
        "verification": AuditVerification.objects.first(),
        "checkpoint": AuditCheckpoint.objects.first(),
        "pending_age": oldest_pending_age(),
    }
    status = 400 if error else 200
    if htmx_partial(request) and request.GET.get("part") == "table":
        return render(request, "audit/_table.html", context, status=status)
    return render(request, "audit/list.html", context, status=status)


def _known_actions() -> list[str]:
    # The datalist for the action filter. DISTINCT reads the whole (action, id) index at millions
    # of rows, so the answer is cached for a minute.
    return cache.get_or_set(
        "audit:known-actions",
        lambda: sorted(AuditEntry.objects.order_by().values_list("action", flat=True).distinct()[:200]),
        60,
    )


@login_required
def audit_detail(request: HttpRequest, pk: int) -> HttpResponse:
    _require_auditor(request)
    entry = AuditEntry.objects.filter(pk=pk).first()
    if entry is None:
        raise Http404("No such audit entry.")
    prev_entry = next_entry = None
    hash_ok = None
    if entry.seq is not None:
        prev_entry = AuditEntry.objects.filter(seq=entry.seq - 1).only("id", "seq", "hash").first()
        next_entry = AuditEntry.objects.filter(seq=entry.seq + 1).only("id", "seq", "prev_hash").first()
        hash_ok = entry_hash(entry.prev_hash, hashed_values(entry)) == entry.hash
    context = {
        "e": entry,
        "diff": diff_rows(entry.payload),
        "payload_pretty": _pretty(entry.payload),
        "prev_entry": prev_entry,
        "next_entry": next_entry,
        "hash_ok": hash_ok,
        "prev_link_ok": prev_entry is None or prev_entry.hash == entry.prev_hash,
        "next_link_ok": next_entry is None or next_entry.prev_hash == entry.hash,
        "same_request": AuditEntry.objects.filter(request_id=entry.request_id).exclude(pk=entry.pk)[:20]
        if entry.request_id else [],
    }
    return render(request, "audit/detail.html", context)


@login_required
@require_POST
def verify_chain(request: HttpRequest) -> HttpResponse:
    """Start a verification: inline when the log is small, else as a django-q2 task (the page
    polls the result)."""
    _require_auditor(request)
    verification = request_verification(actor=request.user)
    sealed = AuditEntry.objects.filter(seq__isnull=False).count()
    if sealed <= settings.HMS_AUDIT_VERIFY_INLINE_MAX:
        run_verification(verification.pk)
    else:
        from django_q.tasks import async_task

        transaction.on_commit(lambda: async_task("audit.verify.run_verification", verification.pk))
    if htmx_partial(request):
        return verification_status(request, verification.pk)
    return redirect("audit-list")


@login_required
def verification_status(request: HttpRequest, pk: int) -> HttpResponse:
    _require_auditor(request)
    verification = AuditVerification.objects.filter(pk=pk).first()
    if verification is None:
        raise Http404("No such verification.")
    return render(request, "audit/_verification.html", {"verification": verification})
