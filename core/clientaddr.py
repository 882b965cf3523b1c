"""The client's address, read one way everywhere (sign-in throttle, audit context, /metrics allow
list).

`REMOTE_ADDR` is the peer of the socket: it cannot be forged. `X-Forwarded-For` is written by
whoever sent the request, so it is believed only when the peer is a proxy the operator named in
`HMS_TRUSTED_PROXIES`, and then only up to the first hop that is not itself a trusted proxy: each
proxy appends the address it saw, so reading from the right, the first untrusted address is the
one our own proxies vouch for; anything left of it was written by the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_LEN = 45  # the longest textual IPv6 address (the audit and throttle columns' width)


def parse(text: str) -> Address | None:
    """An address (an IPv4 one seen through an IPv6 socket, ::ffff:10.0.0.1, as itself), or None."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: Address | None, proxies: Iterable[Network]) -> bool:
    return ip is not None and any(ip.version == net.version and ip in net for net in proxies)


def forwarded_client(remote: str, forwarded_for: str, proxies: Iterable[Network]) -> str:
    """Pure decision: the client address given the socket peer, the X-Forwarded-For header and the
    trusted proxies."""
    proxies = tuple(proxies)
    peer = parse(remote)
    if not proxies or not _trusted(peer, proxies):
        return remote[:MAX_LEN]
    current = str(peer)
    for hop in reversed([h for h in forwarded_for.split(",") if h.strip()]):
        ip = parse(hop)
        if ip is None:
            # Garbage where a proxy of ours would have written an address: believe no further.
            return current
        current = str(ip)
        if not _trusted(ip, proxies):
            return current
    # Every hop is a trusted proxy (or there was no header): the left-most one is all we know.
    return current


def client_address(request: Any) -> str:
    """The address of whoever sent this request ("" without a request, e.g. a management command)."""
    if request is None:
        return ""
    meta = getattr(request, "META", {})
    return forwarded_client(meta.get("REMOTE_ADDR", "") or "", meta.get("HTTP_X_FORWARDED_FOR", "") or "",
                            getattr(settings, "HMS_TRUSTED_PROXIES", ()))
