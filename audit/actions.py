"""record(): the one way anything enters the audit log.

It must be called inside the transaction of the change it describes (so the entry and the change
commit or roll back together). The chain head is taken under a lock so two writers never get the
same sequence number: a transaction-scoped advisory lock on PostgreSQL; on SQLite the IMMEDIATE
transaction already holds the database write lock.
"""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit.chain import GENESIS, entry_hash
from audit.context import current_context
from audit.models import AuditEntry

CHAIN_LOCK_KEY = 0x48_4D_53_41  # "HMSA": the advisory lock id for the chain head

SECRET_KEYS = {"password", "token", "secret", "authorization", "api_key", "apikey"}


def scrub(payload: Any) -> Any:
    """Secrets never enter the log, whatever a caller passes."""
    if isinstance(payload, dict):
        return {
            k: ("[redacted]" if str(k).lower() in SECRET_KEYS else scrub(v)) for k, v in payload.items()
        }
    if isinstance(payload, list):
        return [scrub(v) for v in payload]
    return payload


def actor_label(actor: Any) -> tuple[str, int | None]:
    if actor is None:
        return "anonymous", None
    if isinstance(actor, str):
        return actor, None
    if getattr(actor, "is_authenticated", False):
        return actor.get_username(), actor.pk
    return "anonymous", None


def record(
    action: str,
    *,
    actor: Any,
    target: Any = None,
    target_type: str = "",
    target_id: str | int = "",
    payload: dict[str, Any] | None = None,
    outcome: str = AuditEntry.Outcome.SUCCESS,
) -> AuditEntry:
    if not connection.in_atomic_block:
        raise RuntimeError("audit.record() must run inside the transaction of the change it records")
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or target.pk
    name, user_id = actor_label(actor)
    ctx = current_context()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY])
        head = AuditEntry.objects.order_by("-seq").values_list("seq", "hash").first()
        seq, prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS)
        fields: dict[str, Any] = {
            "seq": seq,
            "created_at": timezone.now(),
            "actor": name[:150],
            "actor_user_id": user_id,
            "action": action,
            "outcome": str(outcome),
            "target_type": str(target_type),
            "target_id": str(target_id),
            "payload": scrub(payload or {}),
            "ip": ctx.get("ip", ""),
            "user_agent": ctx.get("user_agent", "")[:300],
            "token_id": ctx.get("token_id"),
            "request_id": ctx.get("request_id", ""),
        }
        return AuditEntry.objects.create(prev_hash=prev_hash, hash=entry_hash(prev_hash, fields), **fields)
