"""Log lines as JSON (HMS_LOG_FORMAT=json) and the request they belong to.

Every process (web, worker, controller) logs through settings.LOGGING; with HMS_LOG_FORMAT=json
each record becomes one JSON object on one line, so a log shipper needs no parsing rules. A line
written while a request is being served carries that request's id (the one audit entries store:
audit.middleware.RequestIdMiddleware binds it here, since core may import no app of ours and the
formatter cannot reach audit.context), the user once authentication has resolved one, and the
route. RequestLogMiddleware writes one line per request with its status and duration.

This module needs no Django settings at import time: deploy/gunicorn.conf.py loads the formatter
for gunicorn's own loggers before Django is set up.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.utils.functional import empty  # importable without settings

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

# One dict per request (None outside one): a contextvar, so gunicorn's threads and async code
# each see their own request.
_request: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("hms_log_request", default=None)

# Attributes every LogRecord has; anything else was passed with `extra=` and is kept in the line.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def bind_request(**fields: Any) -> contextvars.Token:
    """Start a request's log context (request_id, request object); undo with reset_request."""
    return _request.set(dict(fields))


def reset_request(token: contextvars.Token) -> None:
    _request.reset(token)


def request_fields() -> dict[str, Any]:
    """request_id, user and route of the request being served; {} outside a request."""
    ctx = _request.get()
    if not ctx:
        return {}
    out: dict[str, Any] = {"request_id": ctx.get("request_id")}
    request = ctx.get("request")
    if request is not None:
        user = _resolved_user(request)
        if user:
            out["user"] = user
        match = getattr(request, "resolver_match", None)
        if match is not None and match.route:
            out["route"] = match.route
    return out


def _resolved_user(request: Any) -> str | None:
    """The username if something already resolved request.user; never resolves it here, since
    that may query the session table from inside a log call (and log that query at DEBUG)."""
    user = request.__dict__.get("user")
    if user is None:
        return None
    wrapped = getattr(user, "_wrapped", user)  # django's SimpleLazyObject, or a user set by API auth
    if wrapped is None or wrapped is empty:  # a lazy object nobody evaluated yet
        return None
    if not getattr(wrapped, "is_authenticated", False):
        return None
    return str(wrapped.get_username())


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the request's fields when there
    is one, anything passed as `extra=`, and the traceback as `exc`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(request_fields())
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: an `extra=` value (a datetime, a model) must not cost the line itself.
        return json.dumps(line, default=str, ensure_ascii=False)


request_log = logging.getLogger("hmsmgmt.request")


class RequestLogMiddleware:
    """One INFO line per request on the "hmsmgmt.request" logger: method, path, route, status,
    duration_ms (and, in JSON, the request id and user). Sits right after RequestIdMiddleware so
    the duration covers the whole stack and the line carries the id; it costs one log call."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        ctx = _request.get()
        token = None
        if ctx is None:  # RequestIdMiddleware normally bound it; keep working without it
            token = bind_request(request_id=getattr(request, "request_id", None))
            ctx = _request.get()
        assert ctx is not None
        ctx["request"] = request
        started = time.perf_counter()
        status = 500
        try:
            response = self.get_response(request)
            status = response.status_code
            return response
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            # status and duration as fields of their own for JSON; the text line says them too.
            request_log.info("%s %s %s %.1fms", request.method, request.path, status, duration_ms,
                             extra={"method": request.method, "path": request.path, "status": status,
                                    "duration_ms": duration_ms})
            if token is not None:
                reset_request(token)
