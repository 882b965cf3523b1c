"""AuditMiddleware: every 401/403/429 refusal that reached the console is audited, and so is a
404 that hid an existing object from its caller (core.permissions notes it), as a denied access.

Bounded per source (audit.refusals): the first refusal of each kind from one client address and
identity in a minute is an entry, the rest are counted into one summary entry when the minute
closes, so a flood cannot grow the log by an entry per request. A refusal the action already
audited (a policy denial records outcome=denied and marks the request through
audit.context.mark_audited) is skipped.

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

from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, transaction
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from audit import refusals
from audit.actions import HEADER_MAX
from audit.context import current_context, note_refusal, request_state, reset_context, set_context
from audit.models import AuditEntry
from audit.signals import flush_admin_log, flush_permission_changes
from core.clientaddr import client_address
from core.logging import bind_request, reset_request
from core.permissions import stop_watching_hidden, watch_hidden

REFUSALS = (401, 403, 429)
HIDDEN = 404  # audited only when core.permissions hid an existing object
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
            user_agent=request.headers.get("User-Agent", "")[:HEADER_MAX],
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
        hidden, hidden_token = watch_hidden()
        try:
            if admin_post:
                with transaction.atomic():
                    response = self.get_response(request)
                    flush_permission_changes(state)
                    flush_admin_log(state)
            else:
                response = self.get_response(request)
            refused = response.status_code in REFUSALS or (response.status_code == HIDDEN and hidden)
            if refused and not still_audited(state):
                record_refusal(request, response, hidden=hidden, detail=state.get("refusal_detail", ""))
        finally:
            stop_watching_hidden(hidden_token)
            reset_context(token)
        return response


    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """A view's PermissionDenied becomes Django's 403 page, which drops its message: keep it for
        the refusal's entry (it names what was refused, e.g. the permission a change needs)."""
        if isinstance(exception, PermissionDenied) and request_state() is not None:
            note_refusal(str(exception))
        return None


def still_audited(state: dict) -> bool:
    """Did an entry this request wrote survive? An action may audit and then see its transaction
    roll back (an admin save whose later part is refused: Django's admin runs the whole form in one
    transaction, so the entry of the part saved first is gone too); the refusal must then still be
    audited. One lookup by primary key, only for a refusal after an entry."""
    if not state.get("audited"):
        return False
    ids = state.get("audited_ids")
    return not ids or AuditEntry.objects.filter(pk__in=ids[-20:]).exists()


def record_refusal(request: HttpRequest, response: HttpResponse, *, hidden: list[tuple[str, str]] = (),
                   detail: str = "") -> None:
    payload: dict = {"status": response.status_code, "method": request.method, "path": request.path[:300]}
    if detail:
        payload["detail"] = detail[:300]  # a page's refusal; a JSON body's own detail below wins
    target_type = target_id = ""
    if response.status_code == HIDDEN and hidden:
        # Answered "not found" so the caller learns nothing; the log says what was asked for.
        target_type, target_id = hidden[0]
        payload["reason"] = "hidden from the caller"
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
        refusals.record_refusal(response.status_code, actor=user, ip=str(current_context().get("ip", "")),
                                path=request.path, payload=payload, target_type=target_type, target_id=target_id)
    except DatabaseError:
        # The caller is refused either way; a database hiccup must not turn a 401 into a 500.
        log.exception("could not audit a %s refusal of %s %s", response.status_code, request.method, request.path)
