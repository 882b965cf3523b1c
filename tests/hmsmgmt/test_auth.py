"""Sessions and pages: CSRF on every unsafe page request (htmx sends the token in hx-headers),
login throttling shared by the console and admin sign-in, and `check --deploy` clean under
production settings."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from accounts.models import LoginFailure, LoginThrottle
from audit.models import AuditEntry
from tests.conftest import ROOT, api, subprocess_env
from tests.hmsmgmt.test_permission_table import API, PAGES, Ctx

pytestmark = pytest.mark.django_db

UNSAFE_PAGE_ROWS = [pytest.param(route, row, id=f"{route}#{i}") for route, rows in PAGES.items()
                    for i, row in enumerate(rows) if row.method not in ("GET", "HEAD", "OPTIONS")]


@pytest.mark.parametrize(("route", "row"), UNSAFE_PAGE_ROWS)
def test_unsafe_page_requests_need_the_csrf_token(route, row, ctx: Ctx, personas) -> None:
    if row.setup:
        row.setup(ctx)
    client = Client(enforce_csrf_checks=True)
    client.force_login(personas["alice"])
    client.get("/")  # sets the CSRF cookie, as a browser visit does
    r = client.post(row.path(ctx), row.body(ctx) or {}, HTTP_HX_REQUEST="true")
    assert r.status_code == 403, f"{route} accepted a POST without the CSRF token"
    token = client.cookies["csrftoken"].value
    r = client.post(row.path(ctx), row.body(ctx) or {}, HTTP_X_CSRFTOKEN=token, HTTP_HX_REQUEST="true")
    assert r.status_code != 403


def test_every_unsafe_api_operation_needs_csrf_with_a_session_but_not_with_a_token(ctx: Ctx, personas,
                                                                                  tokens) -> None:
    unsafe = [(op, rows[0]) for op, rows in API.items() if op[0] not in ("GET", "HEAD", "OPTIONS")]
    assert unsafe
    for (method, _), row in unsafe:
        if row.setup:
            row.setup(ctx)
        client = Client(enforce_csrf_checks=True)
        client.force_login(personas["alice"])
        r = api(client, method, row.path(ctx), row.body(ctx))
        assert r.status_code == 403 and r.json()["error"] == "forbidden", (row.path(ctx), r.content)
        r = api(Client(enforce_csrf_checks=True), method, row.path(ctx), row.body(ctx), tokens["alice"])
        assert r.status_code != 403, (row.path(ctx), r.content)


def test_pages_carry_the_token_in_hx_headers(clients) -> None:
    body = clients["bob"].get("/").content.decode()
    m = re.search(r"""<body hx-headers='\{"X-CSRFToken": "([^"]+)"\}'>""", body)
    assert m and len(m.group(1)) >= 32


# --- login throttling ------------------------------------------------------------------------------

def login(username: str, password: str, ip: str = "10.0.0.1", path: str = "/login/") -> Client:
    c = Client(REMOTE_ADDR=ip)
    c.post(path, {"username": username, "password": password})
    return c


def signed_in(c: Client) -> bool:
    return "_auth_user_id" in c.session


def test_repeated_failures_lock_the_account_then_the_window_frees_it(personas) -> None:
    limit = settings.HMS_LOGIN_MAX_FAILURES
    assert signed_in(login("carol", "pw-carol-123"))
    for _ in range(limit):
        assert not signed_in(login("carol", "wrong"))
    # Now even the right password is refused from that address, and the refusal is audited.
    assert not signed_in(login("carol", "pw-carol-123"))
    throttled = AuditEntry.objects.filter(action="auth.login", outcome="denied", payload__throttled=True)
    assert throttled.count() == 1 and throttled.get().payload["username"] == "carol"
    assert AuditEntry.objects.filter(action="auth.login", outcome="denied").count() == limit + 1
    assert signed_in(login("bob", "pw-bob-123")), "other accounts are not locked"
    # One address's guesses do not lock carol out elsewhere (tests/accounts/test_signin_throttle.py).
    assert signed_in(login("carol", "pw-carol-123", ip="10.9.9.9"))
    # Once the window is over, carol may sign in from the first address again.
    LoginThrottle.objects.update(window_start=timezone.now() - timedelta(seconds=settings.HMS_LOGIN_WINDOW_SECONDS + 1))
    assert signed_in(login("carol", "pw-carol-123"))


def test_throttled_attempts_do_not_extend_the_lock(personas) -> None:
    for _ in range(settings.HMS_LOGIN_MAX_FAILURES):
        login("carol", "wrong")
    for _ in range(3):
        login("carol", "wrong")
    assert LoginFailure.objects.count() == settings.HMS_LOGIN_MAX_FAILURES


def test_one_address_guessing_many_accounts_is_locked(personas) -> None:
    for i in range(settings.HMS_LOGIN_MAX_FAILURES_PER_IP):
        login(f"user{i}", "guess", ip="10.6.6.6")
    assert not signed_in(login("bob", "pw-bob-123", ip="10.6.6.6"))
    assert signed_in(login("bob", "pw-bob-123", ip="10.7.7.7"))


def test_admin_sign_in_is_throttled_too(personas) -> None:
    for _ in range(settings.HMS_LOGIN_MAX_FAILURES):
        login("alice", "wrong", path="/admin/login/")
    c = login("alice", "pw-alice-123", path="/admin/login/")
    assert not signed_in(c)


# --- production settings ---------------------------------------------------------------------------

def check_deploy(**env: str) -> subprocess.CompletedProcess:
    prod = {"HMS_SECRET_KEY": "x7Gq2-kP9vLm_Z4rT8wYc1Nb6Hs3Jd0Fa5Ue_Qo2Ri9Xt4Vn7Ly1Kp8Mz3Wb6Cg0",
            "HMS_ALLOWED_HOSTS": "hms.example.org", "HMS_DEBUG": "0"}
    base = subprocess_env(**{**prod, **env})
    # Set by the browser tests' conftest for Playwright's event loop; never in a deployment.
    base.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), "check", "--deploy", "--fail-level", "WARNING"],
                          env=base, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_check_deploy_is_clean_under_production_settings() -> None:
    ok = check_deploy()
    assert ok.returncode == 0 and "no issues" in ok.stdout, ok.stdout + ok.stderr
    # The check can fail: turning HTTPS redirection off by env is reported.
    off = check_deploy(HMS_SSL_REDIRECT="0")
    assert off.returncode != 0 and "security.W008" in off.stdout + off.stderr
    missing = check_deploy(HMS_SECRET_KEY="")
    assert missing.returncode != 0 and "HMS_SECRET_KEY is required" in missing.stderr


def test_a_locked_account_is_told_so_and_when_to_retry(personas) -> None:
    for _ in range(settings.HMS_LOGIN_MAX_FAILURES):
        wrong = Client(REMOTE_ADDR="10.0.0.2").post("/login/", {"username": "dave", "password": "nope"})
        assert wrong.status_code in (200, 429)
    resp = Client(REMOTE_ADDR="10.0.0.2").post("/login/", {"username": "dave", "password": "pw-dave-123"})
    assert resp.status_code == 429 and int(resp["Retry-After"]) > 0
    assert b"Too many failed sign-ins" in resp.content and b"didn't match" not in resp.content
    # A plain wrong password (no lock) still gets the usual message.
    other = Client(REMOTE_ADDR="10.0.0.3").post("/login/", {"username": "bob", "password": "nope"})
    assert other.status_code == 200 and b"didn't match" in other.content
