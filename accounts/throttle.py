"""Login throttling: too many failed sign-ins within a window lock further attempts until the
window is over. Three counters, each with its own limit (accounts.models.LoginThrottle):

- a username from one address (HMS_LOGIN_MAX_FAILURES): the usual guessing lock-out;
- one address, whatever the usernames (HMS_LOGIN_MAX_FAILURES_PER_IP): one source trying many
  accounts; an IPv6 client counts by its /64, which one subscriber usually holds whole;
- a username from all addresses (HMS_LOGIN_MAX_FAILURES_PER_USER, high): a distributed guesser.

So a flood of wrong passwords for `admin` from one address locks `admin` for that address only:
it can add at most HMS_LOGIN_MAX_FAILURES to the all-addresses counter, so locking `admin` out for
everyone takes many addresses.

It sits in the authentication backend, so the console's sign-in page and Django admin's are
throttled alike, and the counters live in the database so all gunicorn workers share them. A
password check first takes a slot in every counter, atomically (accounts.actions.take_login_slots):
concurrent guesses can never exceed a limit. Attempts refused by the throttle are audited but not
counted: otherwise an attacker hammering a locked account would keep it locked forever.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.utils import timezone

from accounts.actions import record_login_failure, return_login_slots, take_login_slots
from accounts.models import LoginThrottle
from core.clientaddr import client_address, parse


@dataclass(frozen=True)
class Lockout:
    retry_after: int  # seconds

    @property
    def message(self) -> str:
        minutes = max(1, -(-self.retry_after // 60))
        return (f"Too many failed sign-ins for this account or from this address; "
                f"try again in {minutes} minute{'s' if minutes != 1 else ''}.")


def client_ip(request: HttpRequest | None) -> str:
    # One reading of the client address for the whole console (REMOTE_ADDR, or X-Forwarded-For
    # through HMS_TRUSTED_PROXIES only).
    return client_address(request)


def _norm(username: str) -> str:
    return (username or "").strip().lower()[:150]


def address_key(ip: str) -> str:
    """The address as the throttle counts it: IPv4 as is, IPv6 by its /64."""
    addr = parse(ip) if ip else None
    if addr is None:
        return ip[:45]
    if addr.version == 6:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


def counters(username: str, ip: str) -> list[tuple[str, int]]:
    """Pure: the (key, limit) counters an attempt for this username from this address takes a slot
    in, the most specific first (so a refusal there touches none of the others)."""
    user, addr = _norm(username), address_key(ip)
    keys = [(f"ua:{addr}|{user}", settings.HMS_LOGIN_MAX_FAILURES)]
    if addr:
        keys.append((f"a:{addr}", settings.HMS_LOGIN_MAX_FAILURES_PER_IP))
    keys.append((f"u:{user}", settings.HMS_LOGIN_MAX_FAILURES_PER_USER))
    return keys


def _window() -> timedelta:
    return timedelta(seconds=settings.HMS_LOGIN_WINDOW_SECONDS)


def lockout(username: str, ip: str) -> Lockout | None:
    """The current lock-out for this username from this address, if any (read only)."""
    window, now = _window(), timezone.now()
    limits = dict(counters(username, ip))
    worst: Lockout | None = None
    for row in LoginThrottle.objects.filter(key__in=limits, window_start__gt=now - window):
        if row.count >= limits[row.key]:
            retry = max(int((row.window_start + window - now).total_seconds()) + 1, 1)
            if worst is None or retry > worst.retry_after:
                worst = Lockout(retry)
    return worst


class ThrottledModelBackend(ModelBackend):
    """ModelBackend that refuses to even check a password unless every counter has room, and
    records each failed check."""

    def authenticate(self, request: HttpRequest | None, username: str | None = None, password: str | None = None,
                     **kwargs: Any) -> Any:
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        ip = client_ip(request)
        keys = counters(username or "", ip)
        if not take_login_slots(keys, window=_window()):
            record_login_failure(username or "", ip, throttled=True)
            locked = lockout(username or "", ip) or Lockout(1)
            # PermissionDenied stops authenticate() from trying the other backends.
            raise PermissionDenied(locked.message)
        try:
            user = super().authenticate(request, username=username, password=password, **kwargs)
        except BaseException:
            return_login_slots([k for k, _ in keys])
            raise
        if user is None:
            record_login_failure(username or "", ip, throttled=False)
        else:
            return_login_slots([k for k, _ in keys])
        return user
