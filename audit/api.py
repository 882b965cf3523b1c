"""GET /mgmt/audit (auditors only): the audit page's filters as a JSON list with keyset cursors,
one entry, and streamed CSV / JSON Lines exports of any filter."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from ninja import Router

from audit import export, filters
from audit.models import AuditEntry
from audit.selectors import can_view_audit
from core.http import json_error

router = Router(tags=["audit"])


def _auditor(request: HttpRequest) -> None:
    if not can_view_audit(request.user):
        raise PermissionDenied("Only auditors (superusers or holders of audit.view_auditentry) may read the audit log.")


def _bad_filter(exc: filters.FilterError) -> JsonResponse:
    return json_error(400, "invalid_filter", str(exc), field=exc.field)


@router.get("/audit", summary="List audit entries, newest first",
            description="Filters: actor, action (`policy.*` for a prefix), target (name, id or `type:id`), "
                        "outcome, since, until (ISO date or date-time), q (full text in payloads), seq. "
                        "Pagination: `limit` (≤ 500) and the `next_before` cursor of the previous page.")
def list_entries(request: HttpRequest) -> Any:
    _auditor(request)
    try:
        f = filters.parse(request.GET)
        entries, older, newer = filters.page(AuditEntry.objects.all(), f)
    except filters.FilterError as exc:
        return _bad_filter(exc)
    items = [export.row({name: getattr(e, name) for name in export.COLUMNS}) for e in entries]
    return {"items": items, "next_before": older, "prev_after": newer, "limit": f.limit}


@router.get("/audit/export", summary="Export audit entries as CSV or JSON Lines (streamed)",
            description="Same filters as GET /mgmt/audit; `format=csv` (default) or `format=jsonl`. Oldest first.")
def export_entries(request: HttpRequest, format: str = "csv") -> HttpResponse:  # noqa: A002
    _auditor(request)
    if format not in ("csv", "jsonl"):
        return json_error(400, "invalid_filter", "format must be csv or jsonl", field="format")
    try:
        f = filters.parse(request.GET)
    except filters.FilterError as exc:
        return _bad_filter(exc)
    qs = filters.apply(AuditEntry.objects.all(), f).order_by("id")
    rows = export.rows(qs)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    if format == "csv":
        response = StreamingHttpResponse(export.csv_lines(rows), content_type="text/csv; charset=utf-8")
    else:
        response = StreamingHttpResponse(export.jsonl_lines(rows), content_type="application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{format}"'
    return response


@router.get("/audit/{entry_id}", summary="One audit entry")
def get_entry(request: HttpRequest, entry_id: int) -> Any:
    _auditor(request)
    entry = AuditEntry.objects.filter(pk=entry_id).first()
    if entry is None:
        return json_error(404, "not_found", f"No audit entry {entry_id}.")
    return export.row({name: getattr(entry, name) for name in export.COLUMNS})
