"""Small HTTP helpers every app's views share: the htmx-partial test, the safe redirect back, and
the one JSON error envelope (`{"error": code, "detail": sentence, ...}`) of every 4xx/5xx."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme


def htmx_partial(request: HttpRequest) -> bool:
    """An htmx request that wants a fragment (a boosted navigation wants the whole page)."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted


def redirect_back(request: HttpRequest, fallback: str) -> HttpResponseRedirect:
    """To the form's `next` if it is a page of this console, else to `fallback` (a URL name or
    path). Django's own check: it also refuses the forms browsers read as another host ("/\\\\evil")."""
    nxt = request.POST.get("next", "")
    if nxt and url_has_allowed_host_and_scheme(nxt, allowed_hosts={request.get_host()},
                                               require_https=request.is_secure()):
        return redirect(nxt)
    return redirect(fallback)


def json_error(status: int, code: str, detail: str, **extra: Any) -> JsonResponse:
    """The error envelope of the REST API and of every JSON refusal."""
    return JsonResponse({"error": code, "detail": detail, **extra}, status=status)
