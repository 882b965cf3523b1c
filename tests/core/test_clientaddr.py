"""core.clientaddr: the one reading of the client address (REMOTE_ADDR, or X-Forwarded-For only
through HMS_TRUSTED_PROXIES, right-most untrusted hop)."""

from __future__ import annotations

import ipaddress

import pytest

from core.clientaddr import forwarded_client

PROXIES = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(("remote", "xff", "proxies", "expected"), [
    # No trusted proxies: the header is ignored, whatever it says.
    ("192.0.2.9", "10.1.1.1", (), "192.0.2.9"),
    # A peer that is not a trusted proxy cannot make itself someone else.
    ("192.0.2.9", "198.51.100.7", PROXIES, "192.0.2.9"),
    # Through our proxy: the address it saw.
    ("127.0.0.1", "198.51.100.7", PROXIES, "198.51.100.7"),
    # A client-written prefix is ignored: the right-most untrusted hop wins.
    ("127.0.0.1", "6.6.6.6, 198.51.100.7", PROXIES, "198.51.100.7"),
    # Two of our proxies in a row (nginx behind a load balancer in 10/8).
    ("127.0.0.1", "6.6.6.6, 198.51.100.7, 10.2.3.4", PROXIES, "198.51.100.7"),
    # Garbage where our proxy would have written an address: believe no further than the proxy.
    ("127.0.0.1", "198.51.100.7, not-an-ip", PROXIES, "127.0.0.1"),
    # Every hop trusted, or no header: the left-most address we know.
    ("127.0.0.1", "10.9.9.9", PROXIES, "10.9.9.9"),
    ("127.0.0.1", "", PROXIES, "127.0.0.1"),
    # An IPv4 peer through an IPv6 socket is itself.
    ("::ffff:127.0.0.1", "198.51.100.7", PROXIES, "198.51.100.7"),
])
def test_forwarded_client(remote: str, xff: str, proxies, expected: str) -> None:
    assert forwarded_client(remote, xff, proxies) == expected


@pytest.mark.django_db
def test_metrics_allow_list_reads_the_forwarded_client_only_through_a_trusted_proxy(client, settings) -> None:
    settings.HMS_METRICS_TOKEN = ""
    settings.HMS_METRICS_ALLOW = (ipaddress.ip_network("198.51.100.0/24"),)
    # Not trusted: a forged header gets nothing.
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 403
    settings.HMS_TRUSTED_PROXIES = (ipaddress.ip_network("127.0.0.1/32"),)
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.1").status_code == 403
    # The proxy address itself is not in the allow list, and a client cannot hide behind a forged prefix.
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1",
                      HTTP_X_FORWARDED_FOR="198.51.100.7, 192.0.2.1").status_code == 403
