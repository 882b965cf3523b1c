"""Hash chain: canonical encoding, hashing and verification of audit entries."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
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


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def canonical(fields: dict[str, Any]) -> bytes:
    """Stable bytes for an entry: sorted keys, no whitespace, ISO times, UTF-8."""
    body = {name: fields[name] for name in HASHED_FIELDS}
    if isinstance(body["created_at"], datetime):
        # The database may hand back a different tzinfo object; normalise to UTC ISO text.
        body["created_at"] = _utc_iso(body["created_at"])
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default).encode()


def _utc_iso(value: datetime) -> str:

    return value.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(fields)).hexdigest()


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    last_seq: int | None
    bad_seq: int | None = None
    problem: str = ""


def verify_entries(entries: Iterable[Any]) -> VerifyResult:
    """Walk entries in seq order; the first gap, broken link or wrong hash is reported."""
    prev_hash = GENESIS
    expected_seq = 1
    checked = 0
    last_seq: int | None = None
    for entry in entries:
        fields = {name: getattr(entry, name) for name in HASHED_FIELDS}
        if entry.seq != expected_seq:
            problem = (
                f"sequence gap: expected {expected_seq}, found {entry.seq} (entry deleted or reordered)"
            )
            return VerifyResult(False, checked, last_seq, expected_seq, problem)
        if entry.prev_hash != prev_hash:
            return VerifyResult(
                False, checked, last_seq, entry.seq, "prev_hash does not match the previous entry's hash"
            )
        recomputed = entry_hash(prev_hash, fields)
        if recomputed != entry.hash:
            return VerifyResult(
                False, checked, last_seq, entry.seq, "content does not match its hash (entry edited)"
            )
        prev_hash = entry.hash
        last_seq = entry.seq
        expected_seq += 1
        checked += 1
    return VerifyResult(True, checked, last_seq)
