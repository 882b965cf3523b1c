"""The outbound guard (core/outbound.py) against real sockets: a server on loopback is refused
unless the allowlist names it, a redirect is never followed, the connection goes to the address
that was checked (a name that resolves differently a moment later does not move it), and webhook
URLs are shown redacted."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core import outbound


class Server:
    """A real HTTP server on `host`: answers each POST with `status` (and `location`), and a body
    the console must never echo."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, status: int = 200, location: str = "",
                 body: bytes = b"SECRET-BODY-TEXT") -> None:
        self.received: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                server.received.append({"path": self.path, "body": json.loads(self.rfile.read(length) or b"null"),
                                        "host": self.headers.get("Host"), "auth": self.headers.get("Authorization")})
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST  # noqa: N815  (a followed redirect arrives as a GET: recorded too)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


# --- judging addresses ---------------------------------------------------------------------------
@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "fd12:3456::1", "fc00::1",
    "169.254.1.1", "fe80::1", "100.64.0.1", "100.127.255.254", "224.0.0.1", "ff02::1", "0.0.0.0", "::",
    "240.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1",
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "2002:7f00:1::", "64:ff9b::a00:1",
    "::127.0.0.1", "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo to 127.0.0.1
])
def test_non_public_addresses_are_refused(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert outbound.address_problem(ip) is not None
    why = outbound.refusal("example.org", ip, outbound.parse_allowlist([]))
    assert why and why.startswith("refused: private address")


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert outbound.address_problem(ipaddress.ip_address(address)) is None


def test_the_allowlist_names_hosts_addresses_and_networks_but_metadata_only_by_its_address() -> None:
    allow = outbound.parse_allowlist(["alertmanager", "10.0.0.0/8", "127.0.0.1", "169.254.0.0/16"])
    ip = ipaddress.ip_address
    assert outbound.refusal("x", ip("10.9.8.7"), allow) is None
    assert outbound.refusal("x", ip("127.0.0.1"), allow) is None
    assert outbound.refusal("x", ip("127.0.0.2"), allow)
    assert outbound.refusal("Alertmanager.", ip("172.18.0.5"), allow) is None  # the name, whatever it resolves to
    assert outbound.refusal("x", ip("169.254.3.4"), allow) is None
    # A broad range (or an allowed name) does not open the credentials endpoint...
    assert "cloud metadata" in outbound.refusal("x", ip("169.254.169.254"), allow)
    assert outbound.refusal("alertmanager", ip("169.254.169.254"), allow)
    # ...only the address itself does.
    assert outbound.refusal("x", ip("169.254.169.254"), outbound.parse_allowlist(["169.254.169.254"])) is None
    with pytest.raises(ValueError):
        outbound.parse_allowlist(["http://x/"])


def test_a_bad_allowlist_stops_the_console_at_start() -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "HMS_OUTBOUND_ALLOW": "10.0.0.0/8,not a host", "HMS_DEBUG": "1"}
    proc = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0 and "HMS_OUTBOUND_ALLOW" in proc.stderr


# --- real servers --------------------------------------------------------------------------------
def test_a_loopback_server_is_refused_unless_allowed(server: Server, settings) -> None:
    settings.HMS_OUTBOUND_ALLOW = []
    res = outbound.post_json(server.url, {"a": 1}, timeout=2)
    assert not res.ok and res.error == "refused: private address (loopback)" and not server.received
    # "localhost" is judged by what it resolves to, and so are the other spellings of loopback.
    for url in (f"http://localhost:{server.port}/", f"http://127.1:{server.port}/", f"http://2130706433:{server.port}/",
                f"http://[::ffff:127.0.0.1]:{server.port}/", f"http://0x7f.0.0.1:{server.port}/"):
        res = outbound.post_json(url, {}, timeout=2)
        assert not res.ok and res.error.startswith(("refused: private address", "failed: host does not resolve")), url
    assert not server.received

    settings.HMS_OUTBOUND_ALLOW = "127.0.0.1"
    res = outbound.post_json(server.url + "?k=v", {"a": 1}, timeout=2)
    assert res.ok and res.status == 200 and res.error == ""
    assert server.received == [{"path": "/hook?k=v", "body": {"a": 1}, "host": f"127.0.0.1:{server.port}",
                                "auth": None}]


def test_user_info_is_sent_as_basic_auth(server: Server, settings) -> None:
    settings.HMS_OUTBOUND_ALLOW = ["127.0.0.0/8"]
    assert outbound.post_json(f"http://ops:s%40cret@127.0.0.1:{server.port}/h", {}, timeout=2).ok
    assert server.received[0]["auth"] == "Basic b3BzOnNAY3JldA=="  # ops:s@cret


def test_a_redirect_is_not_followed_to_a_private_address(settings) -> None:
    inner = Server(host="127.0.0.2")  # a private service the allowed one points at
    outer = Server(status=307, location=inner.url)
    try:
        settings.HMS_OUTBOUND_ALLOW = ["127.0.0.1"]
        res = outbound.post_json(outer.url, {"x": 1}, timeout=2)
        assert not res.ok and res.status == 307 and "redirect not followed" in res.error
        assert len(outer.received) == 1 and not inner.received
        settings.HMS_OUTBOUND_ALLOW = ["127.0.0.1", "127.0.0.2"]  # even an allowed target: no redirects
        assert not outbound.post_json(outer.url, {"x": 1}, timeout=2).ok and not inner.received
    finally:
        inner.close()
        outer.close()


def test_errors_give_the_status_not_the_body(settings) -> None:
    settings.HMS_OUTBOUND_ALLOW = ["127.0.0.1"]
    s = Server(status=500, body=b"SECRET-BODY-TEXT internal stack trace")
    try:
        res = outbound.post_json(s.url, {}, timeout=2)
    finally:
        s.close()
    assert res == outbound.Result(False, 500, "HTTP 500 Internal Server Error")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    assert outbound.post_json(f"http://127.0.0.1:{port}/", {}, timeout=2).error == "failed: connection refused"


def test_the_checked_address_is_the_one_connected_to(settings, monkeypatch) -> None:
    """DNS rebinding: the name answers an allowed address when checked and a forbidden one right
    after. The request goes to the checked address (one lookup, pinned), never the second."""
    allowed = Server(host="127.0.0.2")
    try:
        forbidden = Server(host="127.0.0.1", port=allowed.port)  # the same port on the other address
    except OSError:
        allowed.close()
        pytest.skip("127.0.0.1 has that port in use")
    answers = iter(["127.0.0.2"] + ["127.0.0.1"] * 10)
    lookups: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    settings.HMS_OUTBOUND_ALLOW = ["127.0.0.2"]
    try:
        res = outbound.post_json(f"http://rebind.test:{allowed.port}/hook", {"n": 1}, timeout=2)
    finally:
        allowed.close()
        forbidden.close()
    assert res.ok, res
    assert len(allowed.received) == 1 and allowed.received[0]["host"] == f"rebind.test:{allowed.port}"
    assert not forbidden.received and lookups == ["rebind.test"]


def test_a_name_with_any_private_address_is_refused(settings, monkeypatch) -> None:
    real = socket.getaddrinfo

    def two(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host != "mixed.test":
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port))]

    monkeypatch.setattr(socket, "getaddrinfo", two)
    settings.HMS_OUTBOUND_ALLOW = []
    assert outbound.url_problem("https://mixed.test/hook") == "refused: private address (private)"


@pytest.mark.parametrize(("url", "problem"), [
    ("ftp://93.184.215.14/x", "refused: not an http(s) URL"),
    ("http:///x", "refused: not an http(s) URL"),
    ("http://93.184.215.14:99999/", "refused: not a valid URL"),
    ("http://no-such-host.invalid/", "failed: host does not resolve"),
    ("https://93.184.215.14/services/T0/B0/X", None),
])
def test_url_problems(url: str, problem: str | None, settings) -> None:
    settings.HMS_OUTBOUND_ALLOW = []
    assert outbound.url_problem(url) == problem


# --- redaction -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "shown"), [
    ("https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX", "https://hooks.slack.com/services/…"),
    ("https://user:pa55@example.org/hook?token=abc123", "https://example.org/hook?…"),
    ("https://webhook.site/6f1c2d3e-aaaa-bbbb-cccc-0123456789ab", "https://webhook.site/…"),
    ("http://alertmanager:9093", "http://alertmanager:9093"),
    ("http://alertmanager:9093/", "http://alertmanager:9093"),
    ("https://[2001:db8::1]:8443/a1b2c3d4e5/x", "https://[2001:db8::1]:8443/…"),
    ("not a url", "(invalid URL)"),
])
def test_webhook_urls_are_shown_redacted(url: str, shown: str) -> None:
    assert outbound.redact_url(url) == shown
