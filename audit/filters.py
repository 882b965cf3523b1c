"""One filter set for the audit page, GET /mgmt/audit and the exports (NetBox-style: the HTML
list and the REST list share it). Keyset pagination by id: `before=<id>` pages to older entries
with an index range scan, never an OFFSET, so page 10 000 costs what page 1 costs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import OperationalError, connection, transaction
from django.db.models import BigIntegerField, ExpressionWrapper, F, Q, QuerySet, TextField, Value
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from audit import events
from audit.models import AuditEntry

FILTER_NAMES = ("actor", "action", "target", "outcome", "since", "until", "q", "seq")
MAX_LIMIT = 500
# Must be the very expression of the GIN index in migration 0004, or PostgreSQL will not use it.
PG_FTS = "jsonb_to_tsvector('simple', payload, '[\"string\", \"numeric\", \"key\"]') @@ plainto_tsquery('simple', %s)"


class FilterError(ValueError):
    def __init__(self, field_name: str, detail: str) -> None:
        super().__init__(f"{field_name}: {detail}")
        self.field = field_name
        self.detail = detail


@dataclass
class AuditFilter:
    values: dict[str, str] = field(default_factory=dict)
    before: int | None = None
    after: int | None = None
    limit: int = 50

    @property
    def active(self) -> bool:
        return any(self.values.values())

    def query_string(self, **extra: Any) -> str:
        from urllib.parse import urlencode

        params = {k: v for k, v in self.values.items() if v}
        params.update({k: v for k, v in extra.items() if v is not None})
        return urlencode(params)


def _when(name: str, raw: str, *, end: bool) -> datetime:
    try:
        # Well-formed but impossible dates (2026-13-45) raise instead of returning None.
        value = parse_datetime(raw.replace(" ", "T")) if ("T" in raw or " " in raw) else None
        day = parse_date(raw) if value is None else None
    except ValueError:
        raise FilterError(name, f"{raw[:40]!r} is not a real date") from None
    if value is None:
        if day is None:
            raise FilterError(name, f"{raw!r} is not a date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM)")
        value = datetime.combine(day, time.max if end else time.min)
    if timezone.is_naive(value):
        value = timezone.make_aware(value, timezone.get_current_timezone())
    return value


def _int(name: str, raw: str | None) -> int | None:
    if raw in (None, ""):
        return None
    try:
        # A whole number as JSON and the API's other parameters take it: "6" and "6.0" alike.
        number = Decimal(str(raw).strip())
    except InvalidOperation:
        raise FilterError(name, f"{raw!r} is not a whole number") from None
    if not number.is_finite() or number != number.to_integral_value():
        raise FilterError(name, f"{raw!r} is not a whole number")
    if number.adjusted() > 18:
        raise FilterError(name, "is too large")
    value = int(number)
    if value < 0:
        raise FilterError(name, "must be 0 or more")
    if value > 2**63 - 1:
        raise FilterError(name, "is too large")  # past the database's bigint: not a sequence number
    return value


def parse(params: Mapping[str, Any]) -> AuditFilter:
    values = {name: str(params.get(name) or "").strip() for name in FILTER_NAMES}
    outcome = values["outcome"]
    if outcome and outcome not in AuditEntry.Outcome.values:
        raise FilterError("outcome", f"must be one of {', '.join(AuditEntry.Outcome.values)}")
    for name in ("since", "until"):
        if values[name]:
            _when(name, values[name], end=name == "until")
    _int("seq", values["seq"])
    limit = _int("limit", params.get("limit")) or 50
    return AuditFilter(values, _int("before", params.get("before")), _int("after", params.get("after")),
                       min(max(limit, 1), MAX_LIMIT))


def apply(qs: QuerySet, f: AuditFilter) -> QuerySet:
    v = f.values
    if v["actor"]:
        qs = qs.filter(actor__startswith=v["actor"][:-1]) if v["actor"].endswith("*") else qs.filter(actor=v["actor"])
    if v["action"]:
        # "policy." or "policy*" means every policy action; else the exact action.
        if v["action"].endswith(("*", ".")):
            qs = qs.filter(action__startswith=v["action"].rstrip("*"))
        else:
            qs = qs.filter(action=v["action"])
    if v["target"]:
        t = v["target"]
        ttype, sep, tid = t.partition(":")
        if sep and "." in ttype:
            types = events.target_types(ttype)  # the model's older label too
            qs = qs.filter(target_type__in=types, target_id=tid) if tid else qs.filter(target_type__in=types)
        else:
            qs = qs.filter(Q(target_repr__icontains=t) | Q(target_id=t) | Q(target_type=t))
    if v["outcome"]:
        qs = qs.filter(outcome=v["outcome"])
    if v["since"]:
        qs = qs.filter(created_at__gte=_when("since", v["since"], end=False))
    if v["until"]:
        qs = qs.filter(created_at__lte=_when("until", v["until"], end=True))
    if v["seq"]:
        qs = qs.filter(seq=_int("seq", v["seq"]))
    if v["q"]:
        if connection.vendor == "postgresql":
            qs = qs.extra(where=[PG_FTS], params=[v["q"]])
        else:
            qs = qs.annotate(_payload_text=Cast("payload", TextField())).filter(_payload_text__icontains=v["q"])
    return qs


# A payload search on PostgreSQL has two good plans and the planner cannot tell which applies: it
# has no idea how rare a word is. Walking the primary key backwards and testing each row is fast
# for a common word (a page of matches turns up at once) and takes seconds for a rare one at a
# million rows; the GIN index plus a sort of the matches is the reverse. So: try the first under a
# short statement timeout, and fall back to the second (forced by ordering on id + 0, which the
# pk index cannot serve).
FTS_FAST_PLAN_MS = 150


def _fetch(qs: QuerySet, f: AuditFilter, descending: bool) -> list[AuditEntry]:
    def run(key: Any) -> list[AuditEntry]:
        return list(qs.order_by(key.desc() if descending else key.asc())[: f.limit + 1])

    if not (f.values.get("q") and connection.vendor == "postgresql"):
        return run(F("id"))
    try:
        with transaction.atomic(), connection.cursor() as cur:
            # set_config(..., true) is transaction-local and undone if this savepoint rolls back.
            cur.execute("SELECT current_setting('statement_timeout'), set_config('statement_timeout', %s, true)",
                        [str(FTS_FAST_PLAN_MS)])
            previous = cur.fetchone()[0]
            rows = run(F("id"))
            cur.execute("SELECT set_config('statement_timeout', %s, true)", [previous])
            return rows
    except OperationalError:
        return run(ExpressionWrapper(F("id") + Value(0), output_field=BigIntegerField()))


def page(qs: QuerySet, f: AuditFilter) -> tuple[list[AuditEntry], int | None, int | None]:
    """One page, newest first, plus the cursors for the older and newer pages (None at an end)."""
    qs = apply(qs, f)
    if f.after is not None:
        chunk = _fetch(qs.filter(id__gt=f.after), f, descending=False)
        has_newer = len(chunk) > f.limit
        entries = list(reversed(chunk[: f.limit]))
        older = entries[-1].id if entries and qs.filter(id__lt=entries[-1].id).exists() else None
        return entries, older, entries[0].id if entries and has_newer else None
    base = qs.filter(id__lt=f.before) if f.before is not None else qs
    chunk = _fetch(base, f, descending=True)
    entries = chunk[: f.limit]
    older = entries[-1].id if len(chunk) > f.limit else None
    newer = entries[0].id if entries and f.before is not None and qs.filter(id__gt=entries[0].id).exists() else None
    return entries, older, newer
