"""AuditMiddleware: every 401/403/429 refusal that reached the console is audited exactly once.

A refusal the action already audited (a policy denial records outcome=denied and marks the request
through audit.context.mark_audited) is skipped.

It also runs every Django admin POST in one transaction, for two reasons:
- django-guardian's object-permission pages: the permission changes of one form submission and
  their single audit entry commit together (see audit.signals).
- a safety net: an admin add/change/delete that no action audited (a model whose admin does not
  call its app's actions) still gets one entry, built from the admin's own LogEntry.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable

from django.db import DatabaseError, transaction
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from audit import events
from audit.actions import record
from audit.context import reset_context, set_context
from audit.models import AuditEntry
from audit.signals import flush_admin_log, flush_permission_changes
from core.clientaddr import client_address
from core.logging import bind_request, reset_request

REFUSALS = (401, 403, 429)
log = logging.getLogger("audit.middleware")


def _admin_prefix() -> str:
    try:
        return reverse("admin:index")
    except NoReverseMatch:
        return "/admin/"


def is_admin_post(request: HttpRequest) -> bool:
    return request.method == "POST" and request.path.startswith(_admin_prefix())


def is_admin_permission_post(request: HttpRequest) -> bool:
    return is_admin_post(request) and "/permissions/" in request.path


class RequestIdMiddleware:
    """Give each request an id (or keep the caller's X-Request-ID) and expose who/where to audit."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if incoming and len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        token = set_context(
            request_id=request_id,
            ip=client_address(request),  # REMOTE_ADDR, or X-Forwarded-For via HMS_TRUSTED_PROXIES
            user_agent=request.headers.get("User-Agent", ""),
            token_id=None,
        )
        # The same id for log lines (core.logging reads it; core cannot import audit.context).
        log_token = bind_request(request_id=request_id)
        try:
            response = self.get_response(request)
        finally:
            reset_request(log_token)
            reset_context(token)
        response["X-Request-ID"] = request_id
        return response


class AuditMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        admin_post = is_admin_post(request)
        state: dict = {"audited": False, "perm_changes": [], "admin_perm": is_admin_permission_post(request),
                       "admin_post": admin_post, "started_at": timezone.now(), "user": getattr(request, "user", None)}
        token = set_context(request_state=state)
        try:
            if admin_post:
                with transaction.atomic():
                    response = self.get_response(request)
                    flush_permission_changes(state)
                    flush_admin_log(state)
            else:
                response = self.get_response(request)
            if response.status_code in REFUSALS and not state["audited"]:
                record_refusal(request, response)
        finally:
            reset_context(token)
        return response


def record_refusal(request: HttpRequest, response: HttpResponse) -> None:
    payload: dict = {"status": response.status_code, "method": request.method, "path": request.path[:300]}
    # The JSON error code/detail says why (bad token, missing permission, throttled); query strings
    # are left out because they may carry secrets.
    if not response.streaming and response.get("Content-Type", "").startswith("application/json"):
        try:
            body = json.loads(response.content[:4096])
            if isinstance(body, dict):
                payload["error"] = str(body.get("error", ""))[:64]
                payload["detail"] = str(body.get("detail", ""))[:300]
        except ValueError:
            pass
    user = getattr(request, "user", None)
    try:
        with transaction.atomic():
            record(events.ACCESS_REFUSED, actor=user, outcome=AuditEntry.Outcome.DENIED, payload=payload)
    except DatabaseError:
        # The caller is refused either way; a database hiccup must not turn a 401 into a 500.
        log.exception("could not audit a %s refusal of %s %s", response.status_code, request.method, request.path)
