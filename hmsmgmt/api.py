"""The /mgmt/ REST API (django-ninja). Views only translate HTTP: parse, resolve access through
the choke point, call the app's action, render. Every error is JSON {"error", "detail"}."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotAllowed
from django.http.request import RawPostDataException
from django.urls import URLPattern, path
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.security import HttpBearer, SessionAuth

from accounts.actions import resolve_token
from audit.api import router as audit_router
from audit.context import update_context
from console.api import router as system_router
from core import safejson
from core.errors import ApiError, PolicyViolation
from core.http import json_error
from core.middleware import database_unavailable
from core.openapi import link_storable_json
from fleet.api import router as services_router
from fleet.node_api import router as nodes_router
from schedules.api import router as schedules_router
from slo.api import router as slo_router
from workflows.api import router as workflows_router


class TokenAuth(HttpBearer):
    openapi_bearerFormat = "hms_<id>_<secret>"
    openapi_description = ("An API token: `python manage.py create_api_token USERNAME` prints one (once); "
                           "send `Authorization: Bearer hms_…`.")

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        api_token = resolve_token(token)
        if api_token is None:
            return None
        request.api_token = api_token  # type: ignore[attr-defined]
        request.user = api_token.user
        update_context(token_id=api_token.pk)
        return api_token.user


class ActiveSessionAuth(SessionAuth):
    """The browser session; ninja enforces CSRF for it on unsafe methods."""

    openapi_description = ("The console's session cookie (sign in at /login/); writes also need the "
                           "`X-CSRFToken` header.")

    def __call__(self, request: HttpRequest) -> Any:
        # No signed-in session: not ours to judge (and not a CSRF failure), so the caller gets 401.
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or not user.is_active:
            return None
        return super().__call__(request)


class StrictParser(Parser):
    """JSON bodies are checked for what the database cannot store (NUL, lone surrogates, numbers
    out of range) here, once, instead of failing as a 500 at the INSERT."""

    def parse_body(self, request: HttpRequest) -> Any:
        return safejson.loads(request.body)


class ConsoleAPI(NinjaAPI):
    """NinjaAPI whose every answer under /mgmt/ is JSON, including the two ninja and Django would
    give as text/HTML: a wrong method on a known path (405) and an unknown path (404)."""

    def get_openapi_schema(self, **kwargs: Any) -> Any:
        return link_storable_json(super().get_openapi_schema(**kwargs))  # the bodies' "any JSON"

    @property
    def urls(self) -> tuple[list[Any], str, str]:
        patterns, app_name, namespace = super().urls
        wrapped: list[Any] = [
            URLPattern(p.pattern, _json_405(_signed_in(p.callback) if p.name == "openapi-view" else p.callback),
                       p.default_args, p.name) if isinstance(p, URLPattern) else p
            for p in patterns
        ]
        wrapped.append(path("<path:rest>", _no_such_endpoint, name="not-found"))
        return wrapped, app_name, namespace


def _signed_in(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """/mgmt/docs is a page for people: sign in first (a redirect to the sign-in page, back here
    after; an API token is accepted too). The schema it reads, /mgmt/openapi.json, stays public:
    it names the operations and their errors, which the README documents anyway, and scripts read
    it before they hold a token."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or not user.is_active:
            scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or resolve_token(raw.strip()) is None:
                return redirect_to_login(request.get_full_path())
        return view(request, *args, **kwargs)

    return wrapper


def _json_405(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        if isinstance(response, HttpResponseNotAllowed):
            allowed = response["Allow"]
            response = _error(request, 405, "method_not_allowed",
                              f"{request.method} is not allowed here; use {allowed}.")
            response["Allow"] = allowed
        return response

    wrapper.csrf_exempt = True  # type: ignore[attr-defined]  # as ninja's own views: auth checks CSRF
    return wrapper


@csrf_exempt
def _no_such_endpoint(request: HttpRequest, rest: str) -> HttpResponse:
    return _error(request, 404, "not_found", f"No API endpoint at /mgmt/{rest[:200]}; see /mgmt/docs.")


api = ConsoleAPI(
    title="hmsmgmt management API",
    version="1.0",
    description="Scale services and run workflows. Authenticate with `Authorization: Bearer <token>` "
    "(create one with `python manage.py create_api_token USERNAME`) or a browser session.",
    auth=[TokenAuth(), ActiveSessionAuth()],
    parser=StrictParser(),
    urls_namespace="mgmt",
    docs_url="/docs",
    openapi_url="/openapi.json",
)


def _error(request: HttpRequest, status: int, code: str, detail: str, **extra: Any) -> HttpResponse:
    return json_error(status, code, detail, **extra)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), "that")


def _describe_validation(errors: list[dict[str, Any]]) -> tuple[str, str]:
    parts = []
    code = "invalid_request"
    for err in errors:
        # Only a body that is not JSON at all is "malformed"; "unable to parse string as an
        # integer" in a path or query parameter is an ordinary invalid value.
        if err.get("type") == "json_invalid":
            code = "malformed_json"
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "payload", "query", "path")]
        field = ".".join(loc) or "body"
        parts.append(f"{field}: {err.get('msg', 'invalid')}")
    if code == "malformed_json":
        return code, "The request body is not valid JSON."
    return code, "; ".join(parts) or "The request is not valid."


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    if request.method in ("POST", "PUT", "PATCH") and request.content_type != "multipart/form-data":
        # Say what is wrong with the body as a whole rather than list every missing field.
        if not request.body.strip():
            return _error(request, 400, "invalid_request", "The request body is empty; send a JSON object.")
        try:
            body = safejson.loads(request.body)
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            return _error(request, 400, "invalid_request",
                          f"The request body must be a JSON object, not {_json_kind(body)}.")
    code, detail = _describe_validation(exc.errors)
    return _error(request, 400, code, detail)


@api.exception_handler(AuthenticationError)
def on_auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = _error(request, 401, "unauthorized",
                      "Authentication required: send 'Authorization: Bearer <token>' or sign in.")
    response["WWW-Authenticate"] = 'Bearer realm="hmsmgmt"'
    return response


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    status = exc.status_code
    if isinstance(exc.__cause__, safejson.UnstorableJSON):  # ninja wraps the parser's error
        return _error(request, 400, "invalid_request", str(exc.__cause__))
    if status == 400 and "parse" in str(exc).lower():
        return _error(request, 400, "malformed_json", "The request body is not valid JSON.")
    if status == 403:
        return _error(request, 403, "forbidden", str(exc) or "CSRF verification failed.")
    return _error(request, status, "http_error", str(exc))


@api.exception_handler(Http404)
def on_404(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(request, 404, "not_found", str(exc) or "Not found.")


@api.exception_handler(PermissionDenied)
def on_403(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return _error(request, 403, "forbidden", str(exc) or "You may not do that.")


@api.exception_handler(RequestDataTooBig)
def on_too_big(request: HttpRequest, exc: Exception) -> HttpResponse:
    return _error(request, 413, "payload_too_large", "The request body is too large.")


@api.exception_handler(RawPostDataException)
def on_raw(request: HttpRequest, exc: Exception) -> HttpResponse:
    return _error(request, 400, "invalid_request", "The request body could not be read.")


@api.exception_handler(ApiError)
def on_api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return _error(request, exc.status, exc.code, exc.detail, **exc.extra)


@api.exception_handler(PolicyViolation)
def on_policy_violation(request: HttpRequest, exc: PolicyViolation) -> HttpResponse:
    d = exc.decision
    return _error(request, d.status, "policy_violation", d.detail, policy=d.policy, kind=d.kind,
                  limit=d.limit, current=d.current, reasons=d.reasons, policies=d.denied_by)


@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def on_database_unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    # ninja catches a view's (and its auth's) exceptions before Django's middleware could: answer
    # as core.middleware does for the rest of the console (503 database_unavailable, not a 500).
    return database_unavailable(request, exc)


api.add_router("", services_router)
api.add_router("", nodes_router)
api.add_router("", slo_router)
api.add_router("", workflows_router)
api.add_router("", schedules_router)
api.add_router("", audit_router)
api.add_router("", system_router)
