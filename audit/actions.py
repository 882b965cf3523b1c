"""record(): the one way anything enters the audit log.

It must be called inside the transaction of the change it describes (so the entry and the change
commit or roll back together). It is a plain INSERT: no chain lock, so concurrent writers never
queue behind each other. The entry is durable when the transaction commits; audit.sealer then
gives it its sequence number and hash, in commit order, within a second.
"""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit import events
from audit.chain import content_digest
from audit.context import current_context, mark_audited
from audit.models import AuditEntry, AuditVerification

SECRET_KEYS = {"password", "token", "secret", "authorization", "api_key", "apikey", "password1", "password2",
               "private_key", "cookie", "sessionid", "csrfmiddlewaretoken", "signature_key"}
REDACTED = "[redacted]"
# Client-supplied headers kept in entries (User-Agent; X-Request-ID is kept only when short and
# printable, see audit.middleware) are capped: a client must not make each entry kilobytes big.
HEADER_MAX = 256


def client_header(value: Any, limit: int = HEADER_MAX) -> str:
    """A client-supplied header as stored: printable characters only, at most `limit` of them."""
    text = "".join(c if c.isprintable() else "?" for c in str(value or "")[:limit])
    return text[:limit]


def _is_secret_key(key: Any) -> bool:
    k = str(key).lower()
    return k in SECRET_KEYS or k.endswith(("_password", "_secret", "_token")) or k.startswith("password")


def scrub(payload: Any) -> Any:
    """Secrets never enter the log, whatever a caller passes. Also makes the payload JSON-safe."""
    if isinstance(payload, dict):
        return {str(k): (REDACTED if _is_secret_key(k) else scrub(v)) for k, v in payload.items()}
    if isinstance(payload, (list, tuple, set, frozenset)):
        items = [scrub(v) for v in payload]
        return sorted(items, key=str) if isinstance(payload, (set, frozenset)) else items
    if payload is None or isinstance(payload, (bool, int, float, str)):
        return payload
    if hasattr(payload, "isoformat"):
        return payload.isoformat()
    return str(payload)


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
    target_repr: str = "",
) -> AuditEntry:
    """Write one entry. `actor` is a user, or "system:<component>" for what the controller or a
    worker does on its own. Who/where (ip, user agent, token id, request id) come from the request
    context set by the middleware and the API auth."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit.record() must run inside the transaction of the change it records")
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or target.pk
        target_repr = target_repr or str(target)
    name, user_id = actor_label(actor)
    ctx = current_context()
    token_id = ctx.get("token_id")
    values: dict[str, Any] = {
        "created_at": timezone.now(),
        "actor": name[:150],
        "actor_user_id": user_id,
        "action": action[:64],
        "outcome": str(outcome),
        "target_type": str(target_type)[:64],
        "target_id": str(target_id)[:200],
        "target_repr": str(target_repr)[:200],
        "payload": scrub(payload or {}),
        "ip": str(ctx.get("ip", ""))[:64],
        "user_agent": client_header(ctx.get("user_agent", "")),
        "token_id": int(token_id) if token_id is not None else None,
        "request_id": client_header(ctx.get("request_id", ""), 64),
    }
    # Hashed here, in the writing transaction, from exactly the values inserted: a sha256 in
    # Python, no extra query on the write path.
    entry = AuditEntry.objects.create(**values, content_hash=content_digest(values))
    mark_audited(entry.pk)
    return entry


# --- audit-app actions --------------------------------------------------------------------------
def request_verification(*, actor: Any) -> AuditVerification:
    """An auditor asks for a full chain verification (the page's "Verify chain" button)."""
    with transaction.atomic():
        name, _ = actor_label(actor)
        verification = AuditVerification.objects.create(requested_by=name)
        record(events.AUDIT_VERIFY, actor=actor, target=verification, payload={"verification": verification.pk})
    return verification
