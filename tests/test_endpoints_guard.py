"""The SSRF guard: endpoints that reach inside the network are refused unless allow-listed,
public ones pass; e-mail addresses must be one plausible address.

DNS is the one seam: `resolve` stands in for `socket.getaddrinfo` with a fixed answer."""

from __future__ import annotations

import socket
from ipaddress import ip_address
from typing import Any

import pytest

from commands.endpoints import EndpointRefused, check_email, check_url

PUBLIC = "93.184.216.34"

INTERNAL = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("10.0.0.5", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.20", "private"),
    ("169.254.169.254", "metadata"),
    ("169.254.10.1", "link-local"),
    ("100.64.0.1", "shared"),
    ("100.127.255.254", "shared"),
    ("100.100.100.200", "metadata"),  # Alibaba Cloud's metadata service
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("::1", "loopback"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fd00:ec2::254", "metadata"),
    ("fe80::1", "link-local"),
    ("::", "unspecified"),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4 inside IPv6 goes where the IPv4 address goes
    ("::ffff:10.1.2.3", "private"),
    ("64:ff9b::a00:5", "private"),  # 10.0.0.5 through NAT64
]


def dns(*addresses: str) -> Any:
    """A `getaddrinfo` answering `addresses` for any name, as the real one shapes them."""

    def resolve(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
             (a, port, 0, 0) if ":" in a else (a, port))
            for a in addresses
        ]

    return resolve


def no_dns(host: str, *args: Any, **kwargs: Any) -> Any:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def literal(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@pytest.mark.parametrize(("address", "why"), INTERNAL)
def test_internal_addresses_are_refused_with_the_reason_and_the_remedy(address: str, why: str) -> None:
    with pytest.raises(EndpointRefused) as refused:
        check_url(f"http://{literal(address)}:8080/hook", allow=[], resolve=no_dns)
    message = str(refused.value)
    assert why in message and "COMPLAINTS_NOTIFY_ALLOW_HOSTS" in message


@pytest.mark.parametrize(("address", "why"), INTERNAL)
def test_a_name_resolving_to_an_internal_address_is_refused(address: str, why: str) -> None:
    with pytest.raises(EndpointRefused, match=why) as refused:
        check_url("https://hooks.example.com/in", allow=[], resolve=dns(address))
    assert f"hooks.example.com resolves to {ip_address(address)}" in str(refused.value)


def test_one_internal_address_among_public_ones_is_enough_to_refuse() -> None:
    with pytest.raises(EndpointRefused, match="10.0.0.5, a private address"):
        check_url("https://hooks.example.com/in", allow=[], resolve=dns(PUBLIC, "10.0.0.5"))


@pytest.mark.parametrize("url", [
    f"http://{PUBLIC}/hook",
    f"https://{PUBLIC}:8443/hook?token=x",
    "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
])
def test_public_addresses_pass(url: str) -> None:
    check_url(url, allow=[], resolve=no_dns)


def test_a_name_resolving_to_public_addresses_passes() -> None:
    check_url("https://oapi.dingtalk.com/robot/send?access_token=t", allow=[],
              resolve=dns(PUBLIC, "2606:2800:220:1:248:1893:25c8:1946"))


@pytest.mark.parametrize(("url", "allow", "resolve"), [
    ("http://127.0.0.1:9000/hook", ["127.0.0.1"], no_dns),  # the address
    ("http://[::1]:9000/hook", ["::1"], no_dns),
    ("http://10.1.2.3/hook", ["10.0.0.0/8"], no_dns),  # a range
    ("http://[fd12::7]/hook", ["fc00::/7"], no_dns),
    ("http://100.64.3.4/hook", ["100.64.0.0/10"], no_dns),
    ("http://receiver.internal/hook", ["receiver.internal"], no_dns),  # the host: not even resolved
    ("http://Receiver.Internal./hook", ["receiver.internal"], no_dns),
    ("http://receiver.internal/hook", ["192.168.0.0/16"], dns("192.168.7.7")),  # its address's range
    ("http://localhost:8080/hook", ["127.0.0.0/8", "::1"], dns("127.0.0.1", "::1")),
    ("http://169.254.169.254/latest/meta-data", ["169.254.169.254"], no_dns),
    ("http://metadata.google.internal/computeMetadata/v1/", ["metadata.google.internal"], no_dns),
])
def test_the_allow_list_admits_a_host_an_address_or_a_range(url: str, allow: list[str], resolve: Any) -> None:
    check_url(url, allow=allow, resolve=resolve)


def test_an_allow_list_entry_admits_only_what_it_names() -> None:
    with pytest.raises(EndpointRefused, match="10.0.0.6"):
        check_url("http://10.0.0.6/", allow=["10.0.0.5", "other.internal"], resolve=no_dns)
    with pytest.raises(EndpointRefused, match="127.0.0.1"):  # some of localhost's addresses only
        check_url("http://localhost/", allow=["::1"], resolve=dns("::1", "127.0.0.1"))


@pytest.mark.parametrize("host", ["metadata.google.internal", "metadata", "METADATA.google.internal."])
def test_metadata_names_are_refused_before_any_lookup(host: str) -> None:
    with pytest.raises(EndpointRefused, match="metadata"):
        check_url(f"http://{host}/computeMetadata/v1/", allow=[], resolve=dns(PUBLIC))


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://93.184.216.34/x", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("gopher://93.184.216.34/", "only http and https"),
    ("hooks.example.com/in", "only http and https"),
    ("http:///path-only", "no host"),
    ("http://93.184.216.34:99999/", "out of range"),
])
def test_urls_that_are_not_http_endpoints_are_refused(url: str, why: str) -> None:
    with pytest.raises(EndpointRefused, match=why):
        check_url(url, allow=[], resolve=dns(PUBLIC))


def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(EndpointRefused, match="does not resolve"):
        check_url("https://nowhere.invalid/hook", allow=[], resolve=no_dns)
    with pytest.raises(EndpointRefused, match="does not resolve"):
        check_url("https://nowhere.invalid/hook", allow=[], resolve=dns())


def test_the_refusal_is_a_value_error_naming_the_url() -> None:
    with pytest.raises(ValueError, match="http://10.0.0.5/admin"):
        check_url("http://10.0.0.5/admin", allow=[], resolve=no_dns)


def test_the_real_resolver_is_used_by_default() -> None:
    with pytest.raises(EndpointRefused, match="loopback"):
        check_url("http://localhost:9/", allow=[])
    check_url("http://localhost:9/", allow=["127.0.0.0/8", "::1"])


@pytest.mark.parametrize("address", [
    "li.wei@example.com", "王芳 <wang.fang@example.com>", "<ops@example.cn>", "ops+alerts@sub.example.com",
    "complaints@localhost",
])
def test_plausible_email_addresses_pass(address: str) -> None:
    check_email(address)


@pytest.mark.parametrize("address", [
    "", "not an address", "li.wei", "@example.com", "li.wei@", "a@b.com, c@d.com", "a@b.com; c@d.com",
    "a@b.com c@d.com", "a b@example.com", "a@b@example.com", "Name <a@b.com> junk",
    "a@example..com", "a@.example.com", "ops@example.com\r\nBcc: all@example.com",
])
def test_implausible_email_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError):
        check_email(address)
