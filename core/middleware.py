from __future__ import annotations

import json
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.http.multipartparser import MultiPartParserError

from core.http import json_error
from core.safejson import text_problem


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
