"""Entries as plain rows: CSV and JSON Lines, streamed, and read back for verification.

A JSON Lines export carries every hashed field exactly as hashed (times as UTC ISO with
microseconds), so the chain can be re-verified from the file alone (archives rely on this).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from audit.chain import GENESIS, VerifyResult, _utc_iso, verify_entries

COLUMNS = ("id", "seq", "created_at", "actor", "actor_user_id", "action", "outcome", "target_type", "target_id",
           "target_repr", "payload", "ip", "user_agent", "token_id", "request_id", "content_hash", "prev_hash", "hash",
           "sealed_at")
# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...), +cmd|...,
# @SUM, and tab/CR which some import paths strip before looking). Entries hold text clients chose
# (user agent, target names, payload strings), so CSV cells starting so get a leading apostrophe.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def row(values: dict[str, Any]) -> dict[str, Any]:
    out = {name: values.get(name) for name in COLUMNS}
    for name in ("created_at", "sealed_at"):
        if isinstance(out[name], datetime):
            out[name] = _utc_iso(out[name])
    return out


def rows(qs: QuerySet, chunk_size: int = 2000) -> Iterator[dict[str, Any]]:
    for values in qs.values(*COLUMNS).iterator(chunk_size=chunk_size):
        yield row(values)


def jsonl_lines(items: Iterable[dict[str, Any]]) -> Iterator[str]:
    for item in items:
        yield json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n"


class _Line:
    """csv.writer wants a file; hand back each written line instead of buffering the export."""

    def __init__(self) -> None:
        self.buf = io.StringIO()

    def take(self) -> str:
        value = self.buf.getvalue()
        self.buf.seek(0)
        self.buf.truncate()
        return value


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell a spreadsheet shows and never runs. Numbers stay numbers (a negative
    number is data, not a formula); text that starts like a formula is prefixed with '."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_lines(items: Iterable[dict[str, Any]]) -> Iterator[str]:
    """CSV for people and spreadsheets (JSON Lines is the format to re-verify from: CSV cells are
    neutralised, so they are not byte-for-byte what was hashed)."""
    line = _Line()
    writer = csv.writer(line.buf)
    writer.writerow(COLUMNS)
    yield line.take()
    for item in items:
        writer.writerow([csv_cell(json.dumps(item["payload"], ensure_ascii=False, sort_keys=True)
                                  if name == "payload" else item[name]) for name in COLUMNS])
        yield line.take()


def read_jsonl(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for n, text in enumerate(lines, 1):
        if text.strip():
            try:
                yield json.loads(text)
            except ValueError:
                raise ValueError(f"line {n} is not JSON") from None


def verify_rows(items: Iterable[dict[str, Any]], *, start_seq: int = 1, start_hash: str = GENESIS) -> VerifyResult:
    """Verify exported rows (sealed ones, in seq order) as the database chain is verified."""
    sealed = sorted((r for r in items if r.get("seq") is not None), key=lambda r: r["seq"])
    return verify_entries(sealed, start_seq=start_seq, start_hash=start_hash)
