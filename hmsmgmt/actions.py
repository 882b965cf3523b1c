"""Token actions: create (the secret is returned once and never stored) and revoke."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.actions import record
from hmsmgmt.models import ApiToken

TOKEN_PREFIX = "hms_"


def _digest(secret: str) -> str:
    # The secret has 256 bits of entropy, so a plain SHA-256 is enough (no password stretching).
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_token(user: Any, *, actor: Any, name: str = "", expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(user=user, name=name, prefix=prefix, digest=_digest(secret),
                                        expires_at=expires_at)
        record("token.create", actor=actor, target=token,
               payload={"user": user.get_username(), "prefix": prefix, "name": name,
                        "expires_at": expires_at.isoformat() if expires_at else None})
    return token, f"{TOKEN_PREFIX}{prefix}_{secret}"


def revoke_api_token(token: ApiToken, *, actor: Any) -> None:
    with transaction.atomic():
        updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if updated:
            record("token.revoke", actor=actor, target=token, payload={"prefix": token.prefix})


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
    return token
