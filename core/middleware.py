from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.signals import got_request_exception
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.template.loader import render_to_string

from core.dberrors import outage, unavailable
from core.http import json_error
from core.safejson import text_problem

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5  # what a 503 tells callers to wait: a restart of PostgreSQL takes seconds


def database_unavailable(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """The one answer to a request the database could not serve: 503 with the JSON envelope under
    /mgmt/ (code database_unavailable), a plain page elsewhere; Retry-After on both. The driver's
    message is logged (once per outage), not echoed: it names hosts and ports. Shared by the
    middleware below and the API's exception handler (hmsmgmt/api.py), so they cannot disagree."""
    outage.failed(f"web {request.method} {request.path[:100]}", exc)
    locked = "locked" in str(exc).lower()  # SQLite: another writer held the lock past the busy timeout
    if locked:
        detail = ("The database is busy: another writer held its lock longer than the busy timeout. "
                  "The request was not completed; try again shortly.")
    else:
        detail = "The database is unavailable. The request was not completed; try again in a few seconds."
    if request.path.startswith("/mgmt/"):
        response: HttpResponse = json_error(503, "database_unavailable", detail)
    else:
        try:
            # No request context: its processors would read the user and the session (the database).
            html = render_to_string("503.html", {"retry_after": RETRY_AFTER_SECONDS, "detail": detail})
        except Exception:  # a broken template must not turn the 503 back into a 500
            log.exception("cannot render 503.html")
            html = f"<!doctype html><title>Database unavailable</title><h1>Database unavailable</h1><p>{detail}</p>"
        response = HttpResponse(html, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"  # a proxy must not keep serving the outage afterwards
    # Django logs every 5xx at ERROR ("Service Unavailable: /path"), a line per request; the outage
    # itself is logged once above.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def _note_database_error(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """Django turns an exception raised in a middleware (a session saved, a user loaded) into a 500
    at that middleware's own level, so it never reaches the one above; it does send this signal
    first, inside its `except`. Mark the request: DatabaseUnavailableMiddleware turns the 500 into
    the 503 on its way out (also in DEBUG, where Django answers with its technical 500 page)."""
    if request is not None and (exc := unavailable(sys.exc_info()[1])) is not None:
        request._database_error = exc  # type: ignore[attr-defined]


got_request_exception.connect(_note_database_error, dispatch_uid="core.middleware.database_error")


class DatabaseUnavailableMiddleware:
    """A request that meets a database outage (OperationalError/InterfaceError anywhere: a
    middleware below this one, authentication, the session, the view, a template) answers 503
    `database_unavailable`, never a 500. Sits near the top of MIDDLEWARE, below only what needs no
    database (the request id, so the 503 carries one too).

    Three paths, one answer: a view's exception through process_exception; a middleware's exception,
    already a 500 when it gets here, through the request mark _note_database_error sets; and one that
    propagates (DEBUG_PROPAGATE_EXCEPTIONS) through the try."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            response = self.get_response(request)
        except Exception as exc:
            if (db := unavailable(exc)) is None:
                raise
            return database_unavailable(request, db)
        db = getattr(request, "_database_error", None)
        if db is not None and response.status_code == 500:
            return database_unavailable(request, db)
        if outage.active and response.status_code < 500:
            outage.check("web requests")  # logs the return once; at most one probe a second
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        db = unavailable(exception)
        return None if db is None else database_unavailable(request, db)


class BodySizeLimitMiddleware:
    """Refuse oversize API bodies with 413 before anything parses them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/mgmt/") and request.method in ("POST", "PUT", "PATCH"):
            limit = settings.HMS_MAX_BODY_BYTES
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return json_error(400, "bad_request", "Content-Length is not a number.")
            if length > limit:
                return json_error(413, "payload_too_large",
                                      f"Request body is {length} bytes; the limit is {limit} bytes.")
        return self.get_response(request)


class UnstorableInputMiddleware:
    """Refuse (400) a path, query string or form field holding text no database here can store
    (a NUL character, an unpaired surrogate), before any view passes it to a query: PostgreSQL
    would fail the query and the caller would get a 500. JSON bodies are checked by the API's
    parser (core.safejson), where the error can name the field."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            where = self._problem(request)
        except MultiPartParserError as exc:  # e.g. multipart/form-data without a boundary: not a 500
            detail = f"The request body is not valid multipart/form-data ({exc})."
        else:
            if where is None:
                return self.get_response(request)
            detail = f"The {where}; it cannot be stored or looked up."
        if request.path.startswith("/mgmt/"):
            return json_error(400, "invalid_request", detail)
        return HttpResponseBadRequest(detail, content_type="text/plain; charset=utf-8")

    @staticmethod
    def _problem(request: HttpRequest) -> str | None:
        if (why := text_problem(request.path)) is not None:
            return f"URL path {why}"
        sources = [("query parameter", request.GET)]
        if request.method == "POST" and request.content_type in (
            "application/x-www-form-urlencoded", "multipart/form-data"
        ):
            sources.append(("form field", request.POST))
        for label, data in sources:
            for key, values in data.lists():
                for text in (key, *values):
                    if isinstance(text, str) and (why := text_problem(text)) is not None:
                        return f"{label} '{_echoable(key)}' {why}"
        return None


def _echoable(text: str) -> str:
    """A field name fit to echo back: the offending characters replaced."""
    return text.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")[:60]


def json_body_or_error(request: HttpRequest) -> tuple[dict | None, JsonResponse | None]:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return None, json_error(400, "malformed_json", "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return None, json_error(400, "invalid_request", "The request body must be a JSON object.")
    return body, None
