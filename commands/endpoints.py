"""Where a subscription may send: the guard against server-side request forgery (SSRF).

A subscription's endpoint is a URL someone typed; the notifier will POST to it from inside
the network. Without a guard, `http://169.254.169.254/...` reads the cloud's credentials
and `http://10.0.0.5/admin` reaches services no outsider should. So an endpoint must
resolve only to public addresses, unless the operator's allow-list
(COMPLAINTS_NOTIFY_ALLOW_HOSTS) names the host, the address, or a range containing it: a
receiver on your own network is fine once you say so (tests allow loopback that way).

The check resolves the host when the subscription is made. A name can resolve elsewhere
later (DNS rebinding), so the notifier should check again when it delivers.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Sequence
from email.utils import getaddresses, parseaddr
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any
from urllib.parse import urlsplit

Address = IPv4Address | IPv6Address
Resolve = Callable[..., Iterable[tuple[Any, ...]]]  # socket.getaddrinfo's shape

ALLOW_SETTING = "COMPLAINTS_NOTIFY_ALLOW_HOSTS"
# Instance metadata services: they hand out credentials to whoever asks from inside.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "metadata.tencentyun.com"})
METADATA_ADDRESSES = frozenset({
    ip_address("169.254.169.254"),  # AWS, Azure, GCP, OpenStack, ...
    ip_address("fd00:ec2::254"),  # AWS over IPv6
    ip_address("100.100.100.200"),  # Alibaba Cloud
})
SHARED = ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598): neither private nor public
NAT64 = ip_network("64:ff9b::/96")  # IPv4 addresses reached through a NAT64 gateway


class EndpointRefused(ValueError):
    """An endpoint the notifier must not call; the message says why and what to do."""


def check_url(url: str, allow: Sequence[str], resolve: Resolve = socket.getaddrinfo) -> None:
    """Refuse `url` unless it is http(s) and its host resolves only to public addresses,
    or the allow-list names the host, each non-public address, or a range holding it.

    `resolve` is `socket.getaddrinfo` (tests pass their own DNS)."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https"):
        raise EndpointRefused(f"{url!r}: only http and https endpoints are allowed")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise EndpointRefused(f"{url!r}: the URL names no host")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError as error:
        raise EndpointRefused(f"{url!r}: {error}") from None
    names, networks = _allow_list(allow)
    if host in names:
        return
    hint = f"add it to {ALLOW_SETTING} if it is yours"
    if host in METADATA_HOSTS:
        raise EndpointRefused(f"{url!r}: {host} is a cloud metadata service: {hint}")
    for address in _addresses(url, host, port, resolve):
        if any(address in network for network in networks if network.version == address.version):
            continue
        if reason := _why_not_public(address):
            raise EndpointRefused(f"{url!r}: {host} resolves to {address}, {reason}: {hint}")


def check_email(address: str) -> None:
    """Raise ValueError unless `address` is one plausible e-mail address (a display name
    is fine: `王芳 <wang.fang@example.com>`). Deliverability is for the SMTP server to say."""
    if any(ch in address for ch in "\r\n,;") or len(getaddresses([address])) != 1:
        raise ValueError(f"{address!r} is not a single e-mail address")
    _name, mailbox = parseaddr(address)
    local, at, domain = mailbox.rpartition("@")
    if not (at and local and domain) or "@" in local or any(ch.isspace() for ch in mailbox):
        raise ValueError(f"{address!r} is not an e-mail address (name@domain)")
    if domain.startswith(".") or domain.endswith(".") or ".." in domain:
        raise ValueError(f"{address!r}: {domain!r} is not a domain name")


def _allow_list(allow: Sequence[str]) -> tuple[frozenset[str], list[IPv4Network | IPv6Network]]:
    """The allow-list's host names, and its addresses and ranges (an address is a /32 or /128)."""
    names: set[str] = set()
    networks: list[IPv4Network | IPv6Network] = []
    for entry in (entry.strip() for entry in allow):
        try:
            networks.append(ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            names.add(entry.lower().rstrip("."))
    return frozenset(names), networks


def _addresses(url: str, host: str, port: int, resolve: Resolve) -> list[Address]:
    """Every address `host` stands for: itself if it is one, else all that DNS answers."""
    try:
        return [ip_address(host)]
    except ValueError:
        pass
    try:
        answers = resolve(host, port, type=socket.SOCK_STREAM)
        addresses = [ip_address(str(answer[4][0]).split("%", 1)[0]) for answer in answers]
    except (OSError, UnicodeError, ValueError) as error:
        raise EndpointRefused(f"{url!r}: {host} does not resolve ({error})") from None
    if not addresses:
        raise EndpointRefused(f"{url!r}: {host} does not resolve")
    return addresses


def _why_not_public(address: Address) -> str | None:
    """Why the notifier must not call `address` unasked, or None for a public address."""
    if isinstance(address, IPv6Address) and (inner := _embedded_ipv4(address)):
        return _why_not_public(inner)
    checks = (
        (address in METADATA_ADDRESSES, "a cloud metadata address"),
        (address.is_loopback, "a loopback address"),
        (address.is_unspecified, "the unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.version == 4 and address in SHARED, "a shared (carrier-grade NAT) address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for refused, reason in checks if refused), None)


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one carries (::ffff:a.b.c.d, 6to4, NAT64), which is where
    the packets go in the end."""
    if address.ipv4_mapped or address.sixtofour:
        return address.ipv4_mapped or address.sixtofour
    if address in NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None
