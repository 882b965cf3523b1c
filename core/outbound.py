"""Requests the console makes on a user's behalf (alert webhooks, Alertmanager): the guard
against server-side request forgery, and the redacted form a webhook URL is shown in.

A user who may add an alert channel chooses the URL the workers will POST to. Without a guard that
is a way to make the console reach what only it can reach: the cloud metadata service
(169.254.169.254 hands out credentials), the database, Redis, the Docker API, admin ports on
loopback. So every such URL is

- checked when it is saved (a 400 naming the field), and again when it is sent, because what a
  name resolves to can change in between;
- resolved once per send, every address checked, and the connection made to the checked address
  itself (pinned): a DNS answer that changes between the check and the connect (rebinding) cannot
  redirect it. TLS still verifies the certificate against the URL's host name;
- never followed through a redirect: a 3xx is a failed delivery ("redirect not followed"), so an
  allowed server cannot bounce the request to a private address;
- refused when any resolved address is loopback, link-local, private (RFC 1918, ULA), shared
  (CGNAT), multicast, unspecified, reserved or otherwise not global, IPv4 addresses wrapped in IPv6
  (::ffff:a.b.c.d, 6to4, Teredo, NAT64) judged by the address they wrap, unless the operator's
  allowlist HMS_OUTBOUND_ALLOW names the host, the address or a network holding it. A cloud metadata
  address is allowed only when the allowlist names that very address: a broad private range
  allowed for an in-house Alertmanager must not open the credentials endpoint by accident.

Errors are short reasons ("refused: private address (loopback)", "HTTP 500 Internal Server
Error", "failed: timed out"): never the response body, never the URL, never a resolved address.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import re
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REFUSED_PRIVATE = "refused: private address"
# Instance-metadata endpoints of the clouds (AWS IMDS and ECS task metadata, Azure, GCP, Oracle,
# DigitalOcean: 169.254.169.254; AWS over IPv6: fd00:ec2::254; Alibaba: 100.100.100.200).
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.170.23", "169.254.169.253", "fd00:ec2::254", "fd00:ec2::23",
    "100.100.100.200", "192.0.0.192"))
NAT64 = ipaddress.ip_network("64:ff9b::/96")
CGNAT = ipaddress.ip_network("100.64.0.0/10")
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?$")
MAX_REDIRECT_NOTE = "redirect not followed"


class Refused(ValueError):
    """The URL may not be called: its message is the short reason shown to users and in audit."""


@dataclass(frozen=True, slots=True)
class Result:
    ok: bool
    status: int | None
    error: str  # a short reason, never a response body


# --- the allowlist -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Allowlist:
    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    def names_host(self, host: str) -> bool:
        return _norm_host(host) in self.hosts

    def allows(self, host: str, ip: IPAddress) -> bool:
        """Whether the operator allowed `ip` (reached as `host`). Metadata only by its own address."""
        if ip in METADATA:
            return any(net.num_addresses == 1 and ip in net for net in self.networks)
        return self.names_host(host) or any(ip.version == net.version and ip in net for net in self.networks)


def _norm_host(host: str) -> str:
    return host.strip().lower().rstrip(".").strip("[]")


def parse_allowlist(entries: Iterable[str]) -> Allowlist:
    """Hosts, addresses and CIDRs (comma-separated in HMS_OUTBOUND_ALLOW). Raises ValueError
    naming an entry that is neither."""
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for raw in entries:
        item = raw.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        if not HOSTNAME.match(item) or "/" in item:
            raise ValueError(f"{item!r} is not a host name, an address or a CIDR")
        hosts.add(_norm_host(item))
    return Allowlist(frozenset(hosts), tuple(networks))


@lru_cache(maxsize=8)
def _allowlist_cached(entries: tuple[str, ...]) -> Allowlist:
    return parse_allowlist(entries)


def allowlist() -> Allowlist:
    """The operator's allowlist as settings hold it now (read per call, so tests may override it)."""
    raw: Any = getattr(settings, "HMS_OUTBOUND_ALLOW", ())
    entries = tuple(raw.split(",")) if isinstance(raw, str) else tuple(raw)
    return _allowlist_cached(entries)


# --- judging one address (pure) -------------------------------------------------------------------
def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries and is routed to (mapped, 6to4, Teredo client, NAT64,
    the deprecated IPv4-compatible form); None for a plain address."""
    if ip.version != 6:
        return None
    assert isinstance(ip, ipaddress.IPv6Address)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d (not :: and ::1, judged as themselves)
        return ipaddress.IPv4Address(int(ip))
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Why `ip` is not a public address ("loopback", "private", ...), or None if it is one."""
    if ip in METADATA:
        return "cloud metadata"
    inner = embedded_ipv4(ip)
    if inner is not None:
        why = address_problem(inner)
        return f"{why}, inside IPv6" if why else None
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.version == 4 and ip in CGNAT:
        return "shared (CGNAT)"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not global"
    return None


def refusal(host: str, ip: IPAddress, allow: Allowlist) -> str | None:
    """The reason `ip` (reached as `host`) is refused under `allow`, or None."""
    why = address_problem(ip)
    if why is None or allow.allows(host, ip):
        return None
    return f"{REFUSED_PRIVATE} ({why})"


# --- URLs -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent
    userinfo: str  # "user:password" from the URL, sent as basic auth


def parse(url: str) -> Target:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise Refused("refused: not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("refused: not an http(s) URL")
    if any(c in url for c in "\r\n\t\x00 "):
        raise Refused("refused: not a valid URL")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path, userinfo)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to now (an address literal is itself). Raises Refused if none."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise Refused("failed: host does not resolve") from None
    out: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    if not out:
        raise Refused("failed: host does not resolve")
    return out


def check(url: str) -> tuple[Target, list[IPAddress]]:
    """Parse, resolve and judge `url`: the target and its addresses, all allowed. Raises Refused.
    Every address must pass (a name answering one public and one private address is refused)."""
    target = parse(url)
    allow = allowlist()
    addresses = resolve(target.host, target.port)
    for ip in addresses:
        why = refusal(target.host, ip, allow)
        if why:
            raise Refused(why)
    return target, addresses


def url_problem(url: str) -> str | None:
    """For forms: why `url` may not be saved as an outbound target, or None."""
    try:
        check(url)
    except Refused as exc:
        return str(exc)
    return None


# --- sending ----------------------------------------------------------------------------------------
def _connection(target: Target, ip: IPAddress, timeout: float) -> http.client.HTTPConnection:
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        # The host name stays the connection's host: SNI and certificate checks use it.
        conn = http.client.HTTPSConnection(target.host, target.port, timeout=timeout,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)

    def pinned(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        # The checked address, not a second lookup of the name (which could answer differently).
        return socket.create_connection((str(ip), address[1]), *args, **kwargs)

    conn._create_connection = pinned  # type: ignore[attr-defined]  # http.client's own hook
    return conn


def _failure(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "failed: timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "failed: connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "failed: TLS certificate not valid for the host"
    if isinstance(exc, ssl.SSLError):
        return "failed: TLS error"
    if isinstance(exc, ConnectionError):
        return "failed: connection lost"
    return f"failed: {exc.__class__.__name__}"


def status_text(status: int) -> str:
    """"HTTP 500 Internal Server Error": the standard phrase, not the server's own (its text)."""
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def post_json(url: str, payload: Any, *, timeout: float, headers: dict[str, str] | None = None) -> Result:
    """POST `payload` as JSON to `url` through the guard. Never raises for a refusal or a network
    failure: the Result says what happened in a short reason."""
    try:
        target, addresses = check(url)
    except Refused as exc:
        return Result(False, None, str(exc))
    body = json.dumps(payload).encode()
    sent = {"Content-Type": "application/json", "User-Agent": "hmsmgmt/1", **(headers or {})}
    if target.userinfo:
        user, _, password = target.userinfo.partition(":")
        token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
        sent["Authorization"] = f"Basic {token}"
    error = "failed: no address"
    for ip in addresses:  # each already checked; the next one only if this one cannot be reached
        conn = _connection(target, ip, timeout)
        try:
            conn.request("POST", target.path, body=body, headers=sent)
            resp = conn.getresponse()
            resp.read(65536)  # drained, never kept: a body is the far end's text, not ours to echo
            status = resp.status
        except (OSError, http.client.HTTPException) as exc:
            error = _failure(exc)
            if isinstance(exc, (ConnectionRefusedError, TimeoutError, socket.gaierror)):
                continue
            return Result(False, None, error)
        finally:
            conn.close()
        if 200 <= status < 300:
            return Result(True, status, "")
        if 300 <= status < 400:
            return Result(False, status, f"{status_text(status)}: {MAX_REDIRECT_NOTE}")
        return Result(False, status, status_text(status))
    return Result(False, None, error)


# --- showing a URL ----------------------------------------------------------------------------------
_PLAIN_SEGMENT = re.compile(r"^[A-Za-z][A-Za-z._-]{0,23}$")


def redact_url(url: str) -> str:
    """A webhook URL as pages and audit show it: scheme://host[:port]/first-segment/… with the
    user-info dropped and a query shown as ?…. Tokens live in the path (Slack's
    /services/T000/B000/XXXX), the query (?token=) and the user-info; the first segment stays
    only when it reads as a word (a route like /services or /hook), never when it is the token."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "(invalid URL)"
    if not parts.scheme or not parts.hostname:
        return "(invalid URL)"
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    out = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
    segments = [s for s in parts.path.split("/") if s]
    if segments:
        first = segments[0]
        if _PLAIN_SEGMENT.match(first):
            out += f"/{first}" + ("/…" if len(segments) > 1 else "")
        else:
            out += "/…"
    if parts.query or parts.fragment:
        out += "?…"
    return out


def redact_target(kind: str, target: str) -> str:
    """A channel's target as shown: URLs redacted, e-mail addresses as they are."""
    return target if kind == "email" else redact_url(target)
