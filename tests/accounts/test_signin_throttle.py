"""The sign-in throttle (accounts/throttle.py): atomic under concurrent guesses, keyed by
(username, address), per address and per username from all addresses, and unlocking by itself
when its window is over."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.conf import settings
from django.test import Client, override_settings

from accounts.models import LoginFailure, LoginThrottle
from audit.models import AuditEntry
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def threaded_server(transactional_db) -> Iterator[str]:
    """The console under Django's threaded WSGI server (a thread and a database connection per
    request, as live_server), with a listen backlog that takes 50 connections at once (live_server's
    10 resets the rest)."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    class Server(ThreadedWSGIServer):
        request_queue_size = 128

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = Server(("127.0.0.1", 0), Quiet, allow_reuse_address=False)
    server.set_app(WSGIHandler())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def login(username: str, password: str, ip: str = "10.0.0.1", path: str = "/login/", **headers: str) -> Client:
    c = Client(REMOTE_ADDR=ip, **headers)
    c.post(path, {"username": username, "password": password})
    return c


def signed_in(c: Client) -> bool:
    return "_auth_user_id" in c.session


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_fifty_parallel_wrong_passwords_reach_the_password_check_at_most_limit_times(threaded_server,
                                                                                      personas) -> None:
    """50 real HTTP requests at once, each on its own server thread and database connection. Every
    attempt that reached the password check left a LoginFailure row (throttled ones do not), so
    the rows count the checks."""
    limit = settings.HMS_LOGIN_MAX_FAILURES
    url = f"{threaded_server}/login/"
    first = requests.get(url, timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', first.text).group(1)
    cookies = {"csrftoken": first.cookies["csrftoken"]}
    n = 50
    barrier = threading.Barrier(n, timeout=30)

    def guess(i: int) -> int:
        with requests.Session() as s:
            s.cookies.update(cookies)
            barrier.wait()  # all 50 leave together
            r = s.post(url, data={"username": "carol", "password": f"wrong-{i}", "csrfmiddlewaretoken": token},
                       headers={"Referer": url}, timeout=60, allow_redirects=False)
            return r.status_code

    with ThreadPoolExecutor(n) as pool:
        statuses = list(pool.map(guess, range(n)))
    assert set(statuses) <= {200, 429}, statuses
    checked = LoginFailure.objects.filter(username="carol").count()
    assert 1 <= checked <= limit, f"{checked} guesses reached the password check (limit {limit})"
    refused = AuditEntry.objects.filter(action="auth.login", payload__throttled=True).count()
    assert checked + refused == n
    assert statuses.count(429) >= n - limit
    # The right password is refused too while the lock holds (from this address).
    r = requests.post(url, data={"username": "carol", "password": "pw-carol-123", "csrfmiddlewaretoken": token},
                      cookies=cookies, headers={"Referer": url}, timeout=10, allow_redirects=False)
    assert r.status_code == 429


def test_a_locked_account_unlocks_by_itself_after_its_window(personas) -> None:
    with override_settings(HMS_LOGIN_WINDOW_SECONDS=4):
        started = time.monotonic()  # the window opens at the first failure
        for _ in range(settings.HMS_LOGIN_MAX_FAILURES):
            login("carol", "wrong")
        assert not signed_in(login("carol", "pw-carol-123"))
        # Nothing is aged by hand: the real clock frees it, and not before the window is over.
        wait_for(lambda: signed_in(login("carol", "pw-carol-123")), timeout=15, interval=0.25,
                 message="the lock to end")
        assert time.monotonic() - started >= 3.5


def test_a_flood_against_admin_from_one_address_does_not_lock_admin_out_elsewhere(personas) -> None:
    for i in range(100):
        login("alice", f"guess-{i}", ip="203.0.113.66")
    # From the flooding address the account is locked, even with the right password ...
    assert not signed_in(login("alice", "pw-alice-123", ip="203.0.113.66"))
    # ... but alice elsewhere (console and admin sign-in) is not.
    assert signed_in(login("alice", "pw-alice-123", ip="10.0.0.5"))
    assert signed_in(login("alice", "pw-alice-123", ip="10.0.0.6", path="/admin/login/"))
    # The flood reached the password check only HMS_LOGIN_MAX_FAILURES times.
    assert LoginFailure.objects.filter(username="alice").count() == settings.HMS_LOGIN_MAX_FAILURES
    assert LoginThrottle.objects.get(key="u:alice").count == settings.HMS_LOGIN_MAX_FAILURES


@override_settings(HMS_LOGIN_MAX_FAILURES_PER_USER=10)
def test_guesses_from_many_addresses_do_lock_the_account(personas) -> None:
    """The all-addresses counter: a distributed guesser is stopped too (it needs limit/5 addresses)."""
    for ip in ("198.51.100.1", "198.51.100.2"):
        for _ in range(settings.HMS_LOGIN_MAX_FAILURES):
            login("bob", "wrong", ip=ip)
    assert not signed_in(login("bob", "pw-bob-123", ip="198.51.100.3"))
    assert signed_in(login("carol", "pw-carol-123", ip="198.51.100.3")), "only bob is locked"


def test_an_ipv6_client_counts_by_its_slash_64(personas) -> None:
    for i in range(settings.HMS_LOGIN_MAX_FAILURES_PER_IP):
        login(f"user{i}", "guess", ip=f"2001:db8:1:2::{i + 1:x}")
    assert not signed_in(login("bob", "pw-bob-123", ip="2001:db8:1:2:ffff::1"))
    assert signed_in(login("bob", "pw-bob-123", ip="2001:db8:1:3::1"))


def test_a_successful_sign_in_gives_its_slots_back(personas) -> None:
    for _ in range(3):
        assert signed_in(login("bob", "pw-bob-123"))
    assert set(LoginThrottle.objects.values_list("count", flat=True)) == {0}


def test_x_forwarded_for_is_not_believed_without_trusted_proxies(personas) -> None:
    for i in range(settings.HMS_LOGIN_MAX_FAILURES):
        login("carol", "wrong", ip="192.0.2.9", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}")
    # A new forged header does not make a new address.
    assert not signed_in(login("carol", "pw-carol-123", ip="192.0.2.9", HTTP_X_FORWARDED_FOR="10.9.9.9"))
    assert set(LoginFailure.objects.values_list("ip", flat=True)) == {"192.0.2.9"}


def test_behind_a_trusted_proxy_each_client_is_throttled_apart(personas, settings) -> None:
    import ipaddress

    settings.HMS_TRUSTED_PROXIES = (ipaddress.ip_network("127.0.0.1/32"),)
    for _ in range(settings.HMS_LOGIN_MAX_FAILURES):
        login("carol", "wrong", ip="127.0.0.1", HTTP_X_FORWARDED_FOR="spoofed, 198.51.100.7")
    assert not signed_in(login("carol", "pw-carol-123", ip="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7"))
    # Another client behind the same proxy is not caught by the first one's lock.
    assert signed_in(login("carol", "pw-carol-123", ip="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.8"))
    assert set(LoginFailure.objects.values_list("ip", flat=True)) == {"198.51.100.7"}
    # The audit context reads the same address.
    entry = AuditEntry.objects.filter(action="auth.login").order_by("-id").first()
    assert entry.ip == "198.51.100.8"
