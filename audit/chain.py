"""Hash chain: canonical encoding, hashing and verification of audit entries.

An entry's hash covers its own content, its `seq` and the previous entry's hash, so editing,
deleting or reordering a sealed entry breaks every link after it. An entry also carries a content
hash computed by its writer (content_digest), so an edit made before sealing is caught too. Chain
hashes are computed by the sealer from the values as stored (read back from the database), so
verification, which also reads them back, sees the very same bytes whatever the database did to
JSON key order or time zones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
HASHED_FIELDS = (
    "seq",
    "created_at",
    "actor",
    "actor_user_id",
    "action",
    "outcome",
    "target_type",
    "target_id",
    "payload",
    "ip",
    "user_agent",
    "token_id",
    "request_id",
)
# Fields added after the first chain format: hashed only when non-empty, so entries sealed before
# they existed keep verifying (their canonical form never had the key).
OPTIONAL_HASHED_FIELDS = ("target_repr", "content_hash")
# What an entry says, without its place in the chain: the write-time content hash covers these.
CONTENT_FIELDS = tuple(f for f in HASHED_FIELDS if f != "seq") + ("target_repr",)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc_iso(value)
    return str(value)


def _utc_iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def hashed_values(source: Any) -> dict[str, Any]:
    """The hashed fields of a model instance, a values() dict or a parsed export line."""
    get = source.get if isinstance(source, dict) else lambda name, default=None: getattr(source, name, default)
    body = {name: get(name) for name in HASHED_FIELDS}
    for name in OPTIONAL_HASHED_FIELDS:
        value = get(name, "")
        if value:
            body[name] = value
    return body


def canonical(fields: dict[str, Any]) -> bytes:
    """Stable bytes for an entry: sorted keys, no whitespace, UTC ISO times, UTF-8."""
    body = hashed_values(fields)
    if isinstance(body["created_at"], datetime):
        body["created_at"] = _utc_iso(body["created_at"])
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default).encode()


def entry_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(fields)).hexdigest()


def _plain_numbers(value: Any) -> Any:
    """PostgreSQL's jsonb keeps numbers as decimals: 1e20 comes back as the integer
    100000000000000000000 and -0.0 as 0. The content hash is computed before the row is stored and
    checked after it is read back, so integral floats count as the integers they equal."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_numbers(v) for v in value]
    return value


def content_digest(source: Any) -> str:
    """sha256 of what an entry says (CONTENT_FIELDS), from a model instance, a values() dict or
    an export line. record() computes it from the values it writes, in the writing transaction;
    verification recomputes it from the values read back. Pure Python, no query."""
    get = source.get if isinstance(source, dict) else lambda name, default=None: getattr(source, name, default)
    body = {name: get(name) for name in CONTENT_FIELDS}
    body["target_repr"] = body["target_repr"] or ""
    if isinstance(body["created_at"], datetime):
        body["created_at"] = _utc_iso(body["created_at"])
    body["payload"] = _plain_numbers(body["payload"])
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)
    return hashlib.sha256(b"hmsmgmt-audit-content/1\n" + text.encode()).hexdigest()


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    last_seq: int | None
    bad_seq: int | None = None
    problem: str = ""
    last_hash: str = GENESIS
    pending: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        tail = f"; {self.pending} pending (not yet sealed)" if self.pending else ""
        if self.ok:
            return f"intact up to seq {self.last_seq or 0} ({self.checked} entries checked){tail}"
        return f"BROKEN at seq {self.bad_seq}: {self.problem} (intact up to seq {self.last_seq or 0}){tail}"


def verify_entries(
    entries: Iterable[Any], *, start_seq: int = 1, start_hash: str = GENESIS, pending: int = 0
) -> VerifyResult:
    """Walk sealed entries in seq order from (start_seq, start_hash); the first gap, broken link or
    wrong hash is reported with what differs. Pending (unsealed) entries are not part of the chain
    yet: the caller counts them and passes `pending` through."""
    prev_hash = start_hash
    expected_seq = start_seq
    checked = 0
    last_seq: int | None = start_seq - 1 if start_seq > 1 else None

    def broken(seq: int, problem: str, **details: Any) -> VerifyResult:
        return VerifyResult(False, checked, last_seq, seq, problem, prev_hash, pending, details)

    for entry in entries:
        seq = entry["seq"] if isinstance(entry, dict) else entry.seq
        stored_prev = entry["prev_hash"] if isinstance(entry, dict) else entry.prev_hash
        stored_hash = entry["hash"] if isinstance(entry, dict) else entry.hash
        if seq != expected_seq:
            return broken(expected_seq,
                          f"sequence gap: expected {expected_seq}, found {seq} (entry deleted or reordered)",
                          expected_seq=expected_seq, found_seq=seq)
        if stored_prev != prev_hash:
            return broken(seq, "prev_hash does not match the previous entry's hash (entry deleted, reordered "
                               "or re-chained)", expected_prev_hash=prev_hash, found_prev_hash=stored_prev)
        recomputed = entry_hash(prev_hash, hashed_values(entry))
        if recomputed != stored_hash:
            return broken(seq, "content does not match its hash (entry edited)",
                          stored_hash=stored_hash, recomputed_hash=recomputed)
        written = entry.get("content_hash") if isinstance(entry, dict) else getattr(entry, "content_hash", "")
        if written and content_digest(entry) != written:
            # The chain links what the sealer read; the content hash is what the writer wrote.
            return broken(seq, "content does not match the hash computed when it was written "
                               "(entry edited before it was sealed)",
                          content_hash=written, recomputed_content_hash=content_digest(entry))
        prev_hash = stored_hash
        last_seq = seq
        expected_seq += 1
        checked += 1
    return VerifyResult(True, checked, last_seq, last_hash=prev_hash, pending=pending)
