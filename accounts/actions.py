"""Account-security actions: API tokens (the secret is returned once and never stored; expiry,
revocation), disabling a user (tokens revoked, sessions ended) and failed sign-ins (throttle)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from accounts.models import ApiToken, LoginFailure, LoginThrottle
from audit import events
from audit.actions import record
from audit.models import AuditEntry

# last_used_at is informational: refresh it at most this often, not on every request.
LAST_USED_RESOLUTION = timedelta(seconds=60)

TOKEN_PREFIX = "hms_"


def _digest(secret: str) -> str:
    # The secret has 256 bits of entropy, so a plain SHA-256 is enough (no password stretching).
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_token(
    user: Any, *, actor: Any, name: str = "", expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(user=user, name=name, prefix=prefix, digest=_digest(secret),
                                        expires_at=expires_at)
        record(events.TOKEN_CREATE, actor=actor, target=token,
               payload={"user": user.get_username(), "prefix": prefix, "name": name,
                        "expires_at": expires_at.isoformat() if expires_at else None})
    return token, f"{TOKEN_PREFIX}{prefix}_{secret}"


def revoke_api_token(token: ApiToken, *, actor: Any) -> None:
    with transaction.atomic():
        updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if updated:
            record(events.TOKEN_REVOKE, actor=actor, target=token, payload={"prefix": token.prefix})


def later_expiry(old: datetime | None, new: datetime | None) -> bool:
    """Pure: would moving a token's expiry from `old` to `new` give it a longer life? (None: never.)"""
    if old is None:
        return False
    return new is None or new > old


def update_api_token(token: ApiToken, *, actor: Any, name: str | None = None,
                     expires_at: datetime | None = None, clear_expiry: bool = False) -> ApiToken:
    """Rename a token or bring its expiry earlier. An expiry is never moved later (or removed):
    extending a token would hand an old secret a new life without anyone seeing it printed again;
    issue a new token instead. Raises ValueError for a later expiry, and changes nothing."""
    with transaction.atomic():
        current = ApiToken.objects.select_for_update().get(pk=token.pk)
        new_expiry = None if clear_expiry else (expires_at if expires_at is not None else current.expires_at)
        if later_expiry(current.expires_at, new_expiry):
            raise ValueError(f"A token's expiry may only be moved earlier (it expires "
                             f"{current.expires_at.isoformat()}); create a new token instead.")
        changes: dict[str, Any] = {}
        if name is not None and name != current.name:
            changes["name"] = [current.name, name]
            current.name = name
        if new_expiry != current.expires_at:
            changes["expires_at"] = [current.expires_at.isoformat() if current.expires_at else None,
                                     new_expiry.isoformat() if new_expiry else None]
            current.expires_at = new_expiry
        if changes:
            current.save(update_fields=["name", "expires_at"])
            record(events.TOKEN_UPDATE, actor=actor, target=current,
                   payload={"prefix": current.prefix, "changes": changes})
    return current


def resolve_token(raw: str) -> ApiToken | None:
    """The active token for a presented bearer string, or None. Constant-time digest compare."""
    if not raw.startswith(TOKEN_PREFIX):
        return None
    prefix, sep, secret = raw[len(TOKEN_PREFIX):].partition("_")
    if not sep or not secret:
        return None
    token = ApiToken.objects.select_related("user").filter(prefix=prefix).first()
    if token is None or not hmac.compare_digest(token.digest, _digest(secret)):
        return None
    if not token.active or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def disable_user(user: Any, *, actor: Any, reason: str = "") -> dict[str, int]:
    """Disable an account at once: no new sign-in, its API tokens revoked, its sessions ended.

    (Authentication already refuses an inactive user's session and tokens; revoking and deleting
    them too means re-enabling the account does not bring old credentials back.)"""
    now = timezone.now()
    with transaction.atomic():
        type(user).objects.filter(pk=user.pk).update(is_active=False)
        user.is_active = False
        tokens = ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=now)
        sessions = [
            s.pk for s in Session.objects.filter(expire_date__gt=now)
            if str(s.get_decoded().get("_auth_user_id")) == str(user.pk)
        ]
        Session.objects.filter(pk__in=sessions).delete()
        record(events.USER_DISABLE, actor=actor, target=user,
               payload={"user": user.get_username(), "tokens_revoked": tokens, "sessions_ended": len(sessions),
                        "reason": reason})
    return {"tokens_revoked": tokens, "sessions_ended": len(sessions)}


def record_login_failure(username: str, ip: str, *, throttled: bool) -> None:
    """A failed (or throttled) sign-in: counted toward the throttle unless it was itself refused by
    the throttle, and audited either way."""
    now = timezone.now()
    with transaction.atomic():
        if not throttled:
            LoginFailure.objects.create(username=username.strip().lower()[:150], ip=ip, at=now)
        # Keep the tables small: anything past twice the window can no longer matter.
        old = now - timedelta(seconds=2 * settings.HMS_LOGIN_WINDOW_SECONDS)
        LoginFailure.objects.filter(at__lt=old).delete()
        LoginThrottle.objects.filter(window_start__lt=old).delete()
        record(events.AUTH_LOGIN, actor="anonymous", outcome=AuditEntry.Outcome.DENIED,
               payload={"username": username[:150], "throttled": throttled})


def take_login_slots(keys: list[tuple[str, int]], *, window: timedelta) -> bool:
    """Take one slot in each (key, limit) counter before a password is checked, or none at all.

    Each take is one conditional UPDATE (`count < limit`, or the window is over and the counter
    starts again at 1): the database serialises concurrent takes on the row, and PostgreSQL re-checks
    the condition on the row a concurrent writer left, so 50 parallel guesses cannot all read
    "4 < 5" and pass, as a count-then-insert would let them. False: some counter is full (the slots
    already taken are given back)."""
    taken: list[str] = []
    for key, limit in keys:
        if not _take(key, limit, window):
            return_login_slots(taken)
            return False
        taken.append(key)
    return True


def _take(key: str, limit: int, window: timedelta) -> bool:
    for _ in range(3):  # a row pruned between the insert and the update: insert it again
        now = timezone.now()
        cutoff = now - window
        # INSERT … ON CONFLICT DO NOTHING (INSERT OR IGNORE on SQLite): the row exists afterwards.
        LoginThrottle.objects.bulk_create([LoginThrottle(key=key, window_start=now, count=0)],
                                          ignore_conflicts=True)
        over = Q(window_start__lte=cutoff)
        # SET expressions read the row as it was before this UPDATE (SQL semantics, both databases).
        updated = LoginThrottle.objects.filter(Q(key=key) & (over | Q(count__lt=limit))).update(
            count=Case(When(over, then=Value(1)), default=F("count") + 1),
            window_start=Case(When(over, then=Value(now)), default=F("window_start")),
        )
        if updated:
            return True
        if LoginThrottle.objects.filter(key=key).exists():
            return False
    return False


def return_login_slots(keys: list[str]) -> None:
    """A password check that did not fail (it succeeded, or it broke) gives its slots back: only
    failures count toward a lock-out."""
    if keys:
        LoginThrottle.objects.filter(key__in=keys, count__gt=0).update(count=F("count") - 1)
