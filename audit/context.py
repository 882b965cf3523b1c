"""Request context (ip, user agent, token id, request id) that record() attaches to entries.

Set by middleware and the API auth; a contextvar so threads and async code each see their own.
"""

from __future__ import annotations

import contextvars
from typing import Any

_ctx: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("audit_ctx", default={})


def current_context() -> dict[str, Any]:
    return _ctx.get()


def set_context(**values: Any) -> contextvars.Token:
    return _ctx.set({**_ctx.get(), **values})


def update_context(**values: Any) -> None:
    _ctx.set({**_ctx.get(), **values})


def reset_context(token: contextvars.Token) -> None:
    _ctx.reset(token)
