"""Login throttling: too many failed sign-ins for a username (or from one address) within a window
lock further attempts until the oldest failure leaves the window.

It sits in the authentication backend, so the console's sign-in page and Django admin's are
throttled alike, and the failures live in the database so all gunicorn workers share the count.
Attempts refused by the throttle are audited but not counted: otherwise an attacker hammering a
locked account would keep it locked forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Min
from django.http import HttpRequest
from django.utils import timezone

from accounts.actions import record_login_failure
from accounts.models import LoginFailure


@dataclass(frozen=True)
class Lockout:
    retry_after: int  # seconds

    @property
    def message(self) -> str:
        minutes = max(1, -(-self.retry_after // 60))
        return (f"Too many failed sign-ins for this account or from this address; "
                f"try again in {minutes} minute{'s' if minutes != 1 else ''}.")


def client_ip(request: HttpRequest | None) -> str:
    # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a proxy we trust rewrites it.
    return (request.META.get("REMOTE_ADDR", "") if request is not None else "")[:45]


def _norm(username: str) -> str:
    return (username or "").strip().lower()[:150]


def lockout(username: str, ip: str) -> Lockout | None:
    """The current lock-out for this username or address, if any."""
    window = timedelta(seconds=settings.HMS_LOGIN_WINDOW_SECONDS)
    since = timezone.now() - window
    recent = LoginFailure.objects.filter(at__gte=since)
    checks = [(recent.filter(username=_norm(username)), settings.HMS_LOGIN_MAX_FAILURES)]
    if ip:
        checks.append((recent.filter(ip=ip), settings.HMS_LOGIN_MAX_FAILURES_PER_IP))
    worst: Lockout | None = None
    for qs, limit in checks:
        agg = qs.aggregate(n=Count("id"), first=Min("at"))
        if agg["n"] >= limit:
            # Unlocked once enough failures have aged out; the oldest one going is a fair estimate.
            retry = int((agg["first"] + window - timezone.now()).total_seconds()) + 1
            if worst is None or retry > worst.retry_after:
                worst = Lockout(max(retry, 1))
    return worst


class ThrottledModelBackend(ModelBackend):
    """ModelBackend that refuses to even check a password while the username or address is locked
    out, and records each failed check."""

    def authenticate(self, request: HttpRequest | None, username: str | None = None, password: str | None = None,
                     **kwargs: Any) -> Any:
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        ip = client_ip(request)
        locked = lockout(username or "", ip)
        if locked is not None:
            record_login_failure(username or "", ip, throttled=True)
            # PermissionDenied stops authenticate() from trying the other backends.
            raise PermissionDenied(locked.message)
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            record_login_failure(username or "", ip, throttled=False)
        return user
