"""Request context (ip, user agent, token id, request id) that record() attaches to entries.

Set by middleware and the API auth; a contextvar so threads and async code each see their own.
"""

from __future__ import annotations

import contextvars
from typing import Any

# Default None, not {}: a shared mutable default would leak values between contexts.
_ctx: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("audit_ctx", default=None)


def current_context() -> dict[str, Any]:
    return _ctx.get() or {}


def set_context(**values: Any) -> contextvars.Token:
    return _ctx.set({**current_context(), **values})


def update_context(**values: Any) -> None:
    _ctx.set({**current_context(), **values})


def reset_context(token: contextvars.Token) -> None:
    _ctx.reset(token)


# --- per-request state ------------------------------------------------------------------------
# audit.middleware puts a mutable dict here for the length of a request. record() marks it, so a
# refusal the action already audited (a policy denial) is not audited a second time as a 403/429.
def request_state() -> dict[str, Any] | None:
    return current_context().get("request_state")


def mark_audited(entry_id: int | None = None) -> None:
    state = request_state()
    if state is not None:
        state["audited"] = True
        if entry_id is not None:
            state.setdefault("audited_ids", []).append(entry_id)


def note_refusal(detail: str) -> None:
    """Say why this request is refused (a page's 403 has no JSON body the middleware could read):
    the access.refused entry carries it as its `detail`."""
    state = request_state()
    if state is not None:
        state["refusal_detail"] = str(detail)[:300]
