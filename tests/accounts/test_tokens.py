"""API tokens: only a hash is stored; expiry, revocation and a disabled user all stop a token (and
a disabled user's sessions) at once."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from accounts.actions import create_api_token, disable_user, revoke_api_token
from accounts.models import ApiToken
from audit.models import AuditEntry
from tests.conftest import ROOT, api, subprocess_env

pytestmark = pytest.mark.django_db


def whoami(token: str | None, client: Client | None = None) -> int:
    return api(client or Client(), "get", "/mgmt/workflows", token=token).status_code


def test_only_the_hash_is_stored_and_the_secret_is_never_audited(personas) -> None:
    token, raw = create_api_token(personas["bob"], actor="system:test", name="ci")
    prefix, secret = raw.removeprefix("hms_").split("_", 1)
    row = ApiToken.objects.filter(pk=token.pk).values().get()
    assert row["digest"] == hashlib.sha256(secret.encode()).hexdigest() and row["prefix"] == prefix
    assert not any(secret in str(v) for v in row.values())
    assert all(secret not in str(e.payload) for e in AuditEntry.objects.all())
    assert AuditEntry.objects.get(action="token.create").payload["prefix"] == prefix


@pytest.mark.parametrize("mangle", [
    lambda raw: raw[:-1] + ("A" if raw[-1] != "A" else "B"),  # right prefix, wrong secret
    lambda raw: raw.replace("hms_", "", 1),
    lambda raw: "hms_nosuchprefix_" + raw.rsplit("_", 1)[1],
    lambda raw: "",
])
def test_a_wrong_token_is_401_with_a_json_body(personas, mangle) -> None:
    _, raw = create_api_token(personas["bob"], actor="system:test")
    assert whoami(raw) == 200
    r = api(Client(), "get", "/mgmt/workflows", token=mangle(raw) or None)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized" and "Bearer" in r["WWW-Authenticate"]


def test_expired_and_revoked_tokens_stop_working(personas) -> None:
    bob = personas["bob"]
    soon, raw_soon = create_api_token(bob, actor="system:test", expires_at=timezone.now() + timedelta(hours=1))
    assert whoami(raw_soon) == 200
    ApiToken.objects.filter(pk=soon.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert whoami(raw_soon) == 401
    token, raw = create_api_token(bob, actor="system:test")
    assert whoami(raw) == 200
    revoke_api_token(token, actor=personas["alice"])
    revoke_api_token(token, actor=personas["alice"])  # twice: one audit entry, nothing changes
    assert whoami(raw) == 401
    assert AuditEntry.objects.filter(action="token.revoke").count() == 1


def test_last_used_is_recorded(personas) -> None:
    token, raw = create_api_token(personas["bob"], actor="system:test")
    assert token.last_used_at is None
    assert whoami(raw) == 200
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_a_disabled_users_tokens_and_sessions_stop_at_once(personas, clients, tokens) -> None:
    bob = personas["bob"]
    assert whoami(tokens["bob"]) == 200 and clients["bob"].get("/").status_code == 200
    # Disabled the plain way (the admin's "active" checkbox): nothing revoked, yet nothing works.
    User.objects.filter(pk=bob.pk).update(is_active=False)
    assert whoami(tokens["bob"]) == 401
    assert clients["bob"].get("/").status_code == 302
    assert api(clients["bob"], "get", "/mgmt/workflows").status_code == 401
    # Enabled again, both work again; disable_user() also revokes and ends sessions for good.
    User.objects.filter(pk=bob.pk).update(is_active=True)
    assert whoami(tokens["bob"]) == 200 and clients["bob"].get("/").status_code == 200
    bob.refresh_from_db()
    result = disable_user(bob, actor=personas["alice"], reason="left the team")
    assert result == {"tokens_revoked": 1, "sessions_ended": 1}
    User.objects.filter(pk=bob.pk).update(is_active=True)
    assert whoami(tokens["bob"]) == 401, "a revoked token stays revoked when the account comes back"
    assert clients["bob"].get("/").status_code == 302, "the session was ended"
    assert not Session.objects.exists() or all(
        s.get_decoded().get("_auth_user_id") != str(bob.pk) for s in Session.objects.all())
    entry = AuditEntry.objects.get(action="user.disable")
    assert entry.actor == "alice" and entry.payload["tokens_revoked"] == 1


def test_admin_revoke_action_is_audited(personas, clients) -> None:
    token, raw = create_api_token(personas["bob"], actor="system:test")
    r = clients["alice"].post("/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    assert r.status_code == 302
    assert whoami(raw) == 401
    assert AuditEntry.objects.get(action="token.revoke").actor == "alice"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_create_api_token_command(personas) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "manage.py"), "create_api_token", *args],
                              env=subprocess_env(), capture_output=True, text=True, timeout=60)

    out = run("bob", "--expires-days", "7", "--name", "ci")
    assert out.returncode == 0, out.stderr
    raw = out.stdout.strip()
    assert raw.startswith("hms_") and whoami(raw) == 200
    assert ApiToken.objects.get(name="ci").expires_at > timezone.now() + timedelta(days=6)
    assert run("nobody").returncode != 0
    User.objects.filter(username="dave").update(is_active=False)
    assert "disabled" in run("dave").stderr
    off = subprocess.run([sys.executable, str(ROOT / "manage.py"), "disable_user", "bob", "--reason", "left"],
                         env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert off.returncode == 0 and "1 token(s) revoked" in off.stdout, off.stderr
    assert whoami(raw) == 401
