"""GET /mgmt/audit (auditors only): the audit page's filters as a JSON list with keyset cursors,
one entry, and streamed CSV / JSON Lines exports of any filter."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from ninja import Field, Path, Query, Router, Schema

from audit import export, filters
from audit.models import AuditEntry
from audit.selectors import can_view_audit
from core.http import json_error
from core.openapi import STORABLE_TEXT, documented

router = Router(tags=["audit"])


def _auditor(request: HttpRequest) -> None:
    if not can_view_audit(request.user):
        raise PermissionDenied("Only auditors (superusers or holders of audit.view_auditentry) may read the audit log.")


# As the audit page's form sends them, an empty value is no filter.
_EMPTY = {"type": "string", "maxLength": 0}
_WHEN = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}, _EMPTY]}
_ID = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 2**63 - 1}, _EMPTY]}


def _param(name: str, schema: dict[str, Any], description: str, example: Any = None) -> dict[str, Any]:
    param = {"in": "query", "name": name, "required": False, "schema": schema, "description": description}
    return param | ({"example": example} if example is not None else {})


# The filters are parsed by audit.filters (shared with the audit page), from request.GET; these
# document them.
FILTER_PARAMS = [
    _param("actor", STORABLE_TEXT, "username or system:<component>; `alice*` for a prefix",
           "alice"),
    _param("action", STORABLE_TEXT, "an action, or `policy.*` for a prefix", "scale"),
    _param("target", STORABLE_TEXT, "a target's name, id or `type:id`", "HMS-SVC"),
    _param("outcome", {"type": "string", "enum": ["", *AuditEntry.Outcome.values]}, "success, denied or error"),
    _param("since", _WHEN, "entries from (a date: from its start)", "2026-04-01"),
    _param("until", _WHEN, "entries until (a date: to its end)", "2026-04-30"),
    _param("q", STORABLE_TEXT, "full text in payloads"),
    _param("seq", _ID, "the entry at this chain position"),
]
PAGE_PARAMS = [
    _param("limit", _ID,
           f"entries per page (0 or none: 50; at most {filters.MAX_LIMIT})", 100),
    _param("before", _ID, "the previous page's `next_before`: entries older than this id"),
    _param("after", _ID, "the previous page's `prev_after`: entries newer than this id"),
]


class EntryOut(Schema):
    """An entry as exported: every hashed field as hashed (times UTC ISO with microseconds)."""

    id: int
    seq: int | None = Field(..., description="chain position; null until sealed")
    created_at: str = Field(..., json_schema_extra={"format": "date-time"})
    actor: str
    actor_user_id: int | None
    action: str
    outcome: str
    target_type: str
    target_id: str
    target_repr: str
    payload: Any = Field(..., description="the action's details (any JSON)")
    ip: str
    user_agent: str
    token_id: int | None
    request_id: str
    prev_hash: str
    hash: str
    sealed_at: str | None = Field(..., json_schema_extra={"format": "date-time"})


class EntryListOut(Schema):
    items: list[EntryOut]
    next_before: int | None = Field(..., description="pass as `before` for the next (older) page; null at the end")
    prev_after: int | None = Field(..., description="pass as `after` for the previous (newer) page")
    limit: int


ENTRY_EXAMPLE = {
    "id": 4711, "seq": 4711, "created_at": "2026-04-01T09:30:00.125000+00:00", "actor": "alice",
    "actor_user_id": 1, "action": "scale", "outcome": "success", "target_type": "fleet.service", "target_id": "3",
    "target_repr": "HMS-SVC", "payload": {"from": 2, "to": 3}, "ip": "127.0.0.1", "user_agent": "curl/8.5.0",
    "token_id": 2, "request_id": "6f1c0d2e9a8b4c3d", "prev_hash": "9a1f…", "hash": "c03e…",
    "sealed_at": "2026-04-01T09:30:01.002000+00:00",
}
_AUDITORS_ONLY = {403: {"error": "forbidden", "detail": "Only auditors (superusers or holders of "
                                                        "audit.view_auditentry) may read the audit log."}}
_BAD_FILTER = {400: {"error": "invalid_filter", "detail": "since: 'yesterday' is not a date (YYYY-MM-DD) or "
                                                         "date-time (YYYY-MM-DDTHH:MM)", "field": "since"}}


def _bad_filter(exc: filters.FilterError) -> JsonResponse:
    return json_error(400, "invalid_filter", str(exc), field=exc.field)


@router.get("/audit", summary="List audit entries, newest first",
            description="Filters: actor, action (`policy.*` for a prefix), target (name, id or `type:id`), "
                        "outcome, since, until (ISO date or date-time), q (full text in payloads), seq. "
                        "Pagination: `limit` (≤ 500) and the `next_before` cursor of the previous page.",
            **documented(EntryListOut, errors=(403,), error_examples=_AUDITORS_ONLY | _BAD_FILTER,
                         response_example={"items": [ENTRY_EXAMPLE], "next_before": 4711, "prev_after": None,
                                           "limit": 50},
                         openapi_extra={"parameters": FILTER_PARAMS + PAGE_PARAMS}))
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
            description="Same filters as GET /mgmt/audit; `format=csv` (default) or `format=jsonl`. Oldest first.",
            **documented(None, errors=(403,), error_examples=_AUDITORS_ONLY | _BAD_FILTER, openapi_extra={
                "parameters": [_param("format", {"type": "string", "enum": ["csv", "jsonl"], "default": "csv"},
                                      "csv (default) or jsonl (JSON Lines: every hashed field as hashed)"),
                               *FILTER_PARAMS],
                "responses": {200: {"description": "The entries, streamed (a file download)", "content": {
                    "text/csv": {"schema": {"type": "string"},
                                 "example": ",".join(export.COLUMNS) + "\r\n4711,4711,2026-04-01T09:30:00.125000+00:00,"
                                            "alice,1,scale,success,fleet.service,3,HMS-SVC,…\r\n"},
                    "application/x-ndjson": {"schema": {"type": "string"},
                                             "example": '{"action": "scale", "actor": "alice", …}\n'}}}}}))
def export_entries(request: HttpRequest, format: str = Query("csv", include_in_schema=False)) -> HttpResponse:  # noqa: A002
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


@router.get("/audit/{entry_id}", summary="One audit entry",
            **documented(EntryOut, errors=(403, 404), response_example=ENTRY_EXAMPLE,
                         error_examples=_AUDITORS_ONLY | {404: {"error": "not_found",
                                                                "detail": "No audit entry 4711."}}))
def get_entry(request: HttpRequest, entry_id: int = Path(..., example=4711)) -> Any:
    _auditor(request)
    entry = AuditEntry.objects.filter(pk=entry_id).first()
    if entry is None:
        return json_error(404, "not_found", f"No audit entry {entry_id}.")
    return export.row({name: getattr(entry, name) for name in export.COLUMNS})
