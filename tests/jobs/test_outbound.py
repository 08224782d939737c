"""app.outbound: the address policy (IANA's registries), URL checks, lookups and reads
bounded in time and bytes, the safe client; app.qstash.callbacks parsing."""

from __future__ import annotations

import base64
import gzip
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from app import outbound
from app.errors import ConfigurationError
from app.outbound import (
    AddressPolicy,
    BlockedAddress,
    DeadlineStream,
    SafeNetworkBackend,
    SafeTransport,
    UpstreamError,
    blocked_cause,
    check_url,
    deadline,
    lookup,
    read_capped,
    resolve,
    safe_client,
    split_credentials,
)
from app.qstash.callbacks import parse_callback
from app.qstash.timing import parse_retry_after
from tests.jobs.recorder import Recorder, recording_server

IP = ipaddress.ip_address


def refusal(address: str, *allowed: str) -> str | None:
    return AddressPolicy(allowed).refusal(IP(address))


# --- the address policy: IANA's special-purpose registries ----------------------------

REFUSED = [
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this network"),
    ("10.0.0.1", "private-use"),
    ("100.64.0.1", "shared address space (CGNAT)"),
    ("100.127.255.255", "shared address space (CGNAT)"),
    ("127.0.0.1", "loopback"),
    ("169.254.1.1", "link-local"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.170.2", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"),
    ("172.16.0.1", "private-use"),
    ("172.31.255.255", "private-use"),
    ("192.0.0.1", "IETF protocol assignments"),
    ("192.0.0.8", "IETF protocol assignments"),  # the IPv4 dummy address
    ("192.0.0.170", "IETF protocol assignments"),  # NAT64/DNS64 discovery
    ("192.0.2.1", "documentation"),
    ("192.88.99.1", "deprecated 6to4 relay anycast"),
    ("192.168.1.1", "private-use"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.51.100.1", "documentation"),
    ("203.0.113.1", "documentation"),
    ("224.0.0.251", "multicast"),
    ("239.255.255.255", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "limited broadcast"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::8.8.8.8", "reserved by the IETF"),  # IPv4-compatible, deprecated
    ("64:ff9b:1::808:808", "local-use IPv4/IPv6 translation"),
    ("100::1", "discard-only"),
    ("2001:2::1", "IETF protocol assignments"),  # benchmarking
    ("2001:10::1", "IETF protocol assignments"),  # ORCHID, deprecated
    ("2001:1::4", "IETF protocol assignments"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("5f00::1", "SRv6 segment identifiers"),
    ("4000::1", "reserved by the IETF"),
    ("1fff:ffff::1", "reserved by the IETF"),
    ("fc00::1", "unique-local"),
    ("fd00:ec2::254", "cloud metadata"),
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("::ffff:10.0.0.1", "wraps 10.0.0.1: private-use"),
    ("::ffff:169.254.169.254", "wraps 169.254.169.254: cloud metadata"),
    ("64:ff9b::7f00:1", "wraps 127.0.0.1: loopback"),
    ("64:ff9b::a9fe:a9fe", "wraps 169.254.169.254: cloud metadata"),
    ("2002:7f00:1::", "wraps 127.0.0.1: loopback"),
    ("2002:c0a8:101::1", "wraps 192.168.1.1: private-use"),
    # Teredo: server 65.54.227.120, client 10.0.0.1 (stored inverted).
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "wraps 10.0.0.1: private-use"),
    # Teredo: server 10.0.0.1, client 8.8.8.8.
    ("2001:0:a00:1:8000:63bf:f7f7:f7f7", "wraps 10.0.0.1: private-use"),
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_policy_names_why_an_address_is_refused(address: str, reason: str) -> None:
    """Each refused block comes with its registry name, logged and returned to QStash."""
    assert refusal(address) == reason


ACCEPTED = [
    "8.8.8.8",
    "93.184.216.34",
    "1.0.0.1",
    "100.63.255.255",  # just below the shared address space
    "100.128.0.0",  # just above it
    "172.15.255.255",
    "172.32.0.0",
    "192.0.1.0",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",
    "192.0.0.9",  # Port Control Protocol anycast: globally reachable
    "192.0.0.10",  # TURN anycast
    "192.31.196.1",  # AS112-v4
    "192.52.193.1",  # AMT
    "192.175.48.1",  # direct delegation AS112
    "2606:2800:220:1:248:1893:25c8:1946",
    "2000::1",
    "3ffe:ffff::1",
    "2001:1::1",
    "2001:1::2",
    "2001:1::3",
    "2001:3::1",
    "2001:4:112::1",
    "2001:20::1",
    "2001:30::1",
    "2620:4f:8000::1",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8: an IPv6-only host's way to public IPv4
    "::ffff:8.8.8.8",
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo: public server and client
]


@pytest.mark.parametrize("address", ACCEPTED)
def test_policy_accepts_globally_reachable_addresses(address: str) -> None:
    """Public unicast, the registry's globally reachable entries, and public IPv4 wrapped."""
    assert refusal(address) is None


# An oracle written apart from the policy: the registry rows with "Globally Reachable",
# most specific match wins; IPv6 outside 2000::/3 is not global unless wrapping IPv4.
REGISTRY: list[tuple[str, bool]] = [
    ("0.0.0.0/8", False),
    ("10.0.0.0/8", False),
    ("100.64.0.0/10", False),
    ("127.0.0.0/8", False),
    ("169.254.0.0/16", False),
    ("172.16.0.0/12", False),
    ("192.0.0.0/24", False),
    ("192.0.0.0/29", False),
    ("192.0.0.8/32", False),
    ("192.0.0.9/32", True),
    ("192.0.0.10/32", True),
    ("192.0.0.170/31", False),
    ("192.0.2.0/24", False),
    ("192.31.196.0/24", True),
    ("192.52.193.0/24", True),
    ("192.88.99.0/24", False),
    ("192.168.0.0/16", False),
    ("192.175.48.0/24", True),
    ("198.18.0.0/15", False),
    ("198.51.100.0/24", False),
    ("203.0.113.0/24", False),
    ("224.0.0.0/4", False),
    ("240.0.0.0/4", False),
    ("::1/128", False),
    ("::/128", False),
    ("64:ff9b:1::/48", False),
    ("100::/64", False),
    ("2001::/23", False),
    ("2001:1::1/128", True),
    ("2001:1::2/128", True),
    ("2001:1::3/128", True),
    ("2001:2::/48", False),
    ("2001:3::/32", True),
    ("2001:4:112::/48", True),
    ("2001:10::/28", False),
    ("2001:20::/28", True),
    ("2001:30::/28", True),
    ("2001:db8::/32", False),
    ("2620:4f:8000::/48", True),
    ("3fff::/20", False),
    ("5f00::/16", False),
    ("fc00::/7", False),
    ("fe80::/10", False),
    ("fec0::/10", False),
    ("ff00::/8", False),
]
METADATA = {"169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254"}
WRAPPERS = ["::ffff:0:0/96", "64:ff9b::/96", "2002::/16", "2001::/32"]


def reachable(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Say whether the registries call ``address`` globally reachable (the oracle)."""
    if str(address) in METADATA:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        inner = [address.ipv4_mapped, address.sixtofour]
        inner += list(address.teredo or ())
        if address in ipaddress.ip_network("64:ff9b::/96"):
            inner.append(ipaddress.IPv4Address(int(address) % 2**32))
        wrapped = [ipv4 for ipv4 in inner if ipv4 is not None]
        if wrapped:
            return all(reachable(ipv4) for ipv4 in wrapped)
    rows = [(ipaddress.ip_network(c), g) for c, g in REGISTRY]
    matches = [(n.prefixlen, g) for n, g in rows if n.version == address.version and address in n]
    if matches:
        return max(matches)[1]
    return address.version == 4 or address in ipaddress.ip_network("2000::/3")


BLOCKS = [cidr for cidr, _ in REGISTRY] + WRAPPERS + ["0.0.0.0/0", "2000::/3", "::/0"]
ADDRESSES = st.sampled_from(BLOCKS).flatmap(
    lambda cidr: st.ip_addresses(network=cidr)
) | st.sampled_from(sorted(METADATA)).map(IP)


@settings(max_examples=400)
@given(address=ADDRESSES)
def test_policy_follows_the_registries(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    """Any address of any registry block, wrapped or not: refused iff not globally reachable."""
    assert (AddressPolicy().refusal(address) is None) == reachable(address), address


def test_allowed_networks_open_only_themselves() -> None:
    """An allowed CIDR opens its addresses and nothing next to it."""
    assert refusal("10.8.3.4", "10.8.0.0/16") is None
    assert refusal("10.9.0.1", "10.8.0.0/16") == "private-use"
    assert refusal("fd00::1", "fd00::/8") is None
    assert refusal("fe00::1", "fd00::/8") == "reserved by the IETF"


def test_allowed_networks_may_be_written_with_host_bits() -> None:
    """10.8.0.1/16 means 10.8.0.0/16, as people write it: not a startup error."""
    assert refusal("10.8.3.4", "10.8.0.1/16") is None
    assert refusal("10.9.0.1", "10.8.0.1/16") == "private-use"


def test_allowed_networks_open_the_ipv4_a_wrapper_carries() -> None:
    """An IPv6 form of an allowed IPv4 address reaches the same host: it is allowed too."""
    assert refusal("::ffff:10.8.3.4", "10.8.0.0/16") is None
    assert refusal("64:ff9b::a08:304", "10.8.0.0/16") is None
    assert refusal("::ffff:10.9.0.1", "10.8.0.0/16") == "wraps 10.9.0.1: private-use"


def test_metadata_stays_refused_inside_an_allowed_network() -> None:
    """Opening CGNAT for a VPN does not open Alibaba's metadata at 100.100.100.200."""
    assert refusal("100.100.100.200", "100.64.0.0/10") == "cloud metadata"
    assert refusal("100.100.100.201", "100.64.0.0/10") is None
    assert refusal("100.100.100.200", "100.100.100.200/32") is None
    assert refusal("fd00:ec2::254", "fd00:ec2::254/128") is None


def test_bad_allowed_networks_are_a_configuration_error() -> None:
    """A typo in WEBHOOK_ALLOWED_NETWORKS stops the app from starting, naming the setting."""
    with pytest.raises(ConfigurationError, match="WEBHOOK_ALLOWED_NETWORKS: '10.0.0.0/33'"):
        AddressPolicy(["10.0.0.0/33"])


def test_check_refuses_if_any_address_is_blocked() -> None:
    """One blocked address among several refuses the host (no rebinding by order)."""
    policy = AddressPolicy()
    with pytest.raises(BlockedAddress, match="10.0.0.7") as raised:
        policy.check("mixed.example", ["93.184.216.34", "10.0.0.7"])
    assert (raised.value.host, raised.value.address) == ("mixed.example", "10.0.0.7")
    assert raised.value.reason == "private-use"
    assert str(raised.value) == "mixed.example resolves to 10.0.0.7 (private-use): refused"


def test_check_returns_the_first_checked_address() -> None:
    """The address connected to is the first one, once every one passed."""
    assert AddressPolicy().check("a.example", ["8.8.4.4", "8.8.8.8"]) == "8.8.4.4"


@pytest.mark.parametrize(
    ("addresses", "shown", "reason"),
    [
        ([], "nothing", "the name did not resolve"),
        (["not-an-ip"], "'not-an-ip'", "not an IP address"),
        (["fe80::1%eth0"], "fe80::1%eth0", "link-local"),
    ],
)
def test_check_refuses_what_is_no_public_address(
    addresses: list[str], shown: str, reason: str
) -> None:
    """No address, a resolver's garbage, a scoped link-local address: refused, never a crash."""
    with pytest.raises(BlockedAddress) as raised:
        AddressPolicy().check("h.example", addresses)
    found = (raised.value.host, raised.value.address, raised.value.reason)
    assert found == ("h.example", shown, reason)


def test_a_zone_does_not_disguise_a_metadata_address() -> None:
    """fd00:ec2::254%eth0 is the metadata address, even with fd00::/8 opened."""
    with pytest.raises(BlockedAddress, match="cloud metadata"):
        AddressPolicy(["fd00::/8"]).check("h.example", ["fd00:ec2::254%eth0"])
    assert AddressPolicy(["fd00::/8"]).check("h.example", ["fd00::1%eth0"]) == "fd00::1%eth0"


def test_blocked_cause_walks_the_exception_chain() -> None:
    """httpx wraps the transport's error: the BlockedAddress is found behind it."""
    blocked = BlockedAddress("h", "10.0.0.1", "private-use")
    try:
        try:
            raise blocked
        except BlockedAddress:
            raise httpx.ConnectError("wrapped") from None  # context only
    except httpx.ConnectError as exc:
        assert blocked_cause(exc) is blocked
    caused = httpx.ConnectError("x")
    caused.__cause__ = blocked
    assert blocked_cause(caused) is blocked
    assert blocked_cause(httpx.ConnectError("plain")) is None


def test_upstream_error_is_a_502_with_its_description() -> None:
    """A remote's failure is a 502 carrying why."""
    error = UpstreamError("resend answered 500")
    assert (error.code, error.description) == (502, "resend answered 500")


# --- check_url: what httpx can request ------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "https://user:pass@hooks.example:8443/x?y=1",
        "http://127.0.0.1:1/",
        "http://[::1]:65535/",
        "http://bücher.example/",
        "http://localhost./",
        "http://hooks.example./",
        "http://example." + "a" * 63 + "./",
        "http://" + "a" * 63 + ".example/",
        "http://" + ".".join(["a" * 63] * 3 + ["a" * 61]) + "/",  # 253 characters
        "http://h.example/" + "x" * (2048 - len("http://h.example/")),
    ],
)
def test_check_url_accepts_what_httpx_requests(url: str) -> None:
    """URLs httpx sends as they are: returned parsed."""
    assert check_url(url) == httpx.URL(url)


NOT_A_NAME = "is not a host name or an IP address"
LONG_NAME = ".".join(["a" * 63] * 3 + ["a" * 62])  # 254 characters


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.000.000.001/", "cannot be requested: Invalid IPv4 address: '127.000.000.001'"),
        (
            "http://0251.0376.0251.0376/",
            "cannot be requested: Invalid IPv4 address: '0251.0376.0251.0376'",
        ),
        ("http://１２７.0.0.1/", "cannot be requested: Invalid IDNA hostname: '１２７.0.0.1'"),
        (
            "http://xn--a.com/",
            "cannot be requested: Codepoint U+0080 at position 1 of '\\x80' not allowed",
        ),
        (
            "http://xn--/",
            "cannot be requested: Malformed A-label, no Punycode eligible content found",
        ),
        ("ftp://example.com/", "the scheme must be http or https"),
        ("http:///x", "no host"),
        ("http://example.com:0/", "port 0 is out of range"),
        ("http://example.com:65536/", "port 65536 is out of range"),
        ("http://example.com:99999/", "port 99999 is out of range"),
        ("http://[::1%25eth0]/", "'::1%25eth0' is an IPv6 address with a zone"),
        ("http://[fe80::1%25]/", "'fe80::1%25' is an IPv6 address with a zone"),
        ("http://a..b/", f"'a..b' {NOT_A_NAME}"),
        ("http://a..b./", f"'a..b.' {NOT_A_NAME}"),
        ("http://ex ample.com/", f"'ex%20ample.com' {NOT_A_NAME}"),
        ("http://" + "a" * 64 + ".example/", f"'{'a' * 64}.example' {NOT_A_NAME}"),
        ("http://example." + "a" * 64 + "./", f"'example.{'a' * 64}.' {NOT_A_NAME}"),
        (f"http://{LONG_NAME}/", f"'{LONG_NAME}' {NOT_A_NAME}"),
        (
            "http://h.example/" + "x" * (2049 - len("http://h.example/")),
            "longer than 2048 characters",
        ),
    ],
)
def test_check_url_refuses_what_httpx_cannot_request(url: str, message: str) -> None:
    """The class of URLs a validator passes but a request crashes on: a ValueError saying why."""
    with pytest.raises(ValueError) as raised:
        check_url(url)
    assert str(raised.value) == message


def test_check_url_never_echoes_credentials() -> None:
    """The message of a refused URL does not repeat the password it carried."""
    with pytest.raises(ValueError) as raised:
        check_url("http://user:hunter2@１２７.0.0.1/")
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "bare", "header"),
    [
        ("http://user:pa%40ss@h.example:81/x?q#f", "http://h.example:81/x?q#f", "user:pa@ss"),
        ("https://tok-123@h.example/", "https://h.example/", "tok-123:"),
        ("http://:pw@h.example/", "http://h.example/", ":pw"),
    ],
)
def test_split_credentials_moves_userinfo_into_basic_auth(url: str, bare: str, header: str) -> None:
    """The URL loses its userinfo; the auth sends exactly what httpx would have sent."""
    target, auth = split_credentials(url)
    assert str(target) == bare
    assert auth is not None
    request = next(auth.auth_flow(httpx.Request("POST", target)))
    expected = "Basic " + base64.b64encode(header.encode()).decode()
    assert request.headers["Authorization"] == expected


def test_split_credentials_without_userinfo_adds_no_auth() -> None:
    """A URL without credentials is requested as it is."""
    assert split_credentials("https://h.example/x") == (httpx.URL("https://h.example/x"), None)


def test_resolve_returns_each_address_once() -> None:
    """Literal addresses resolve to themselves, once, whatever the socket types."""
    assert resolve("127.0.0.1", 80) == ["127.0.0.1"]
    assert resolve("::1", 443) == ["::1"]


# --- name lookups within the deadline ---------------------------------------------------


def test_lookup_returns_what_the_resolver_found() -> None:
    """A prompt resolver's answer is returned as is."""
    assert lookup(lambda host, port: [f"{host}:{port}"], "h", 80, 1.0) == ["h:80"]
    assert lookup(lambda host, port: ["1.2.3.4"], "h", 80, None) == ["1.2.3.4"]


def test_lookup_runs_in_a_named_daemon_thread() -> None:
    """A stuck lookup never keeps the process from exiting, and names what it resolves."""
    seen: list[tuple[str, bool]] = []

    def resolver(host: str, port: int) -> list[str]:
        seen.append((threading.current_thread().name, threading.current_thread().daemon))
        return ["1.2.3.4"]

    lookup(resolver, "h.example", 80, 1.0)
    assert seen == [("lookup h.example", True)]


def test_lookup_raises_what_the_resolver_raised() -> None:
    """An error of the resolver reaches the caller, as if it had run inline."""

    def failing(host: str, port: int) -> list[str]:
        raise socket.gaierror(-2, "Name or service not known")

    with pytest.raises(socket.gaierror, match="not known"):
        lookup(failing, "h", 80, 1.0)


def test_slow_lookup_is_cut_at_the_timeout() -> None:
    """A name server that never answers costs the timeout, not its own minutes."""
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(httpcore.ConnectTimeout, match="resolving slow.example took longer"):
        lookup(lambda host, port: [str(release.wait(5))], "slow.example", 80, 0.2)
    assert time.monotonic() - started < 1.0
    release.set()


def test_pending_lookups_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_PENDING_LOOKUPS stuck lookups, new ones fail at once; finished ones free places."""
    monkeypatch.setattr(outbound, "_pending_lookups", threading.BoundedSemaphore(2))
    release = threading.Event()

    def stuck(host: str, port: int) -> list[str]:
        release.wait(5)
        return ["1.2.3.4"]

    for _ in range(2):
        with pytest.raises(httpcore.ConnectTimeout):
            lookup(stuck, "stuck.example", 80, 0.01)
    started = time.monotonic()
    with pytest.raises(httpcore.ConnectError, match="too many lookups pending"):
        lookup(stuck, "next.example", 80, 1.0)
    assert time.monotonic() - started < 0.5
    release.set()
    assert eventually(lambda: lookup(lambda host, port: ["5.6.7.8"], "h", 80, 1.0))
    assert lookup(lambda host, port: ["5.6.7.8"], "h", 80, 1.0) == ["5.6.7.8"]


def eventually(attempt: Any, within: float = 5.0) -> Any:
    """Return ``attempt()`` once it stops raising ConnectError (threads finish late under load)."""
    give_up = time.monotonic() + within
    while True:
        try:
            return attempt()
        except httpcore.ConnectError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.01)


def test_a_forked_child_starts_with_every_lookup_place_free() -> None:
    """The at-fork hook gives a child a fresh bound (the parent's stuck threads are not its)."""
    before = outbound._pending_lookups
    outbound._new_pending_lookups()
    try:
        fresh = outbound._pending_lookups
        assert fresh is not before
        taken = [fresh.acquire(blocking=False) for _ in range(outbound.MAX_PENDING_LOOKUPS + 1)]
        assert taken == [True] * outbound.MAX_PENDING_LOOKUPS + [False]
    finally:
        outbound._pending_lookups = before


def backend(resolver: Any) -> SafeNetworkBackend:
    return SafeNetworkBackend(AddressPolicy(["127.0.0.1/32"]), resolver)


@pytest.mark.parametrize(
    ("error", "expected", "message"),
    [
        (UnicodeError("label too long"), BlockedAddress, "not a name to look up: label too long"),
        (socket.gaierror(-2, "not known"), httpcore.ConnectError, "cannot resolve h: "),
        (OverflowError("port must be 0-65535"), httpcore.ConnectError, "cannot resolve h: port"),
    ],
)
def test_resolution_errors_become_connect_errors(
    error: Exception, expected: type[Exception], message: str
) -> None:
    """A name the codec refuses is a refusal (489); a failed lookup a retryable error."""

    def resolver(host: str, port: int) -> list[str]:
        raise error

    with pytest.raises(expected, match=message) as raised:
        backend(resolver).connect_tcp("h", 80, timeout=1.0)
    assert raised.value.__cause__ is error
    if isinstance(raised.value, BlockedAddress):
        assert (raised.value.host, raised.value.address) == ("h", "nothing")


def test_connect_checks_the_resolved_addresses() -> None:
    """The backend refuses a name resolving to a refused address before any connection."""
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["10.0.0.1"]

    with pytest.raises(BlockedAddress, match="10.0.0.1") as raised:
        backend(resolver).connect_tcp("h", 8080, timeout=1.0)
    assert raised.value.host == "h"
    assert asked == [("h", 8080)]


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Record what the socket backend is asked to connect to, and connect nowhere."""
    made: list[tuple[Any, ...]] = []

    def connect_tcp(self: Any, *args: Any) -> FakeStream:
        made.append(args)
        return FakeStream()

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)
    return made


def test_connect_goes_to_the_checked_ip_with_the_callers_options(
    connects: list[tuple[Any, ...]],
) -> None:
    """The socket goes to the resolved IP, with httpx's timeout, local address and options."""
    options = [(6, 1, 1)]
    stream = backend(lambda host, port: ["127.0.0.1"]).connect_tcp(
        "h", 8080, timeout=3.0, local_address="127.0.0.2", socket_options=options
    )
    assert isinstance(stream, DeadlineStream)
    assert connects == [("127.0.0.1", 8080, 3.0, "127.0.0.2", options)]


def test_connect_in_a_deadline_waits_at_most_what_is_left(
    connects: list[tuple[Any, ...]],
) -> None:
    """The connection attempt gets the smaller of the connect timeout and the time left."""
    with deadline(2.0):
        backend(lambda host, port: ["127.0.0.1"]).connect_tcp("h", 80, timeout=5.0)
    [(_, _, timeout, _, _)] = connects
    assert 1.5 < timeout <= 2.0


def test_slow_lookup_is_cut_at_the_connect_timeout() -> None:
    """Without a deadline, the lookup still waits no longer than the connect timeout."""
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(httpcore.ConnectTimeout, match="resolving h took longer than 0.2 s"):
        backend(lambda host, port: [str(release.wait(5))]).connect_tcp("h", 80, timeout=0.2)
    assert time.monotonic() - started < 1.0
    release.set()


def test_connect_after_the_deadline_is_a_timeout() -> None:
    """Once the total time is spent, no lookup or connection starts."""
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    with deadline(0.0), pytest.raises(httpcore.ConnectTimeout, match="total timeout expired"):
        backend(resolver).connect_tcp("h", 80, timeout=1.0)
    assert calls == []


def test_slow_lookup_spends_the_deadline_not_the_connect_timeout() -> None:
    """The lookup waits for the smaller of the connect timeout and what the deadline leaves."""
    release = threading.Event()
    started = time.monotonic()
    with deadline(0.2), pytest.raises(httpcore.ConnectTimeout, match="resolving"):
        backend(lambda host, port: [str(release.wait(5))]).connect_tcp("h", 80, timeout=5.0)
    assert time.monotonic() - started < 1.0
    release.set()


def test_connected_stream_obeys_the_deadline(receiver: Recorder) -> None:
    """The stream the backend returns is wrapped: its reads respect the deadline."""
    port = int(receiver.url.rsplit(":", 1)[1])
    stream = backend(lambda host, port: ["127.0.0.1"]).connect_tcp("h", port, timeout=1.0)
    try:
        assert isinstance(stream, DeadlineStream)
        with deadline(0.2), pytest.raises(httpcore.ReadTimeout):
            stream.read(10, timeout=5.0)  # the server waits for a request: nothing comes
    finally:
        stream.close()


# --- the deadline on every operation of a stream ----------------------------------------


class FakeStream(httpcore.NetworkStream):
    """Records the timeout each operation was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float | None]] = []

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.calls.append(("read", timeout))
        return b"x" * max_bytes

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.calls.append(("write", timeout))

    def close(self) -> None:
        self.calls.append(("close", None))

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        self.calls.append(("start_tls", timeout))
        self.tls = (ssl_context, server_hostname)
        return self

    def get_extra_info(self, info: str) -> Any:
        return f"info:{info}"


@pytest.fixture
def fake() -> FakeStream:
    return FakeStream()


def test_stream_without_deadline_passes_timeouts_through(fake: FakeStream) -> None:
    """Outside ``deadline()`` each operation keeps httpx's own timeout."""
    stream = DeadlineStream(fake)
    assert stream.read(3, 5.0) == b"xxx"
    stream.write(b"a", 6.0)
    context = ssl.create_default_context()
    upgraded = stream.start_tls(context, "h.example", 7.0)
    assert isinstance(upgraded, DeadlineStream) and upgraded._stream is fake
    assert fake.tls == (context, "h.example")
    stream.close()
    assert fake.calls == [("read", 5.0), ("write", 6.0), ("start_tls", 7.0), ("close", None)]
    assert stream.get_extra_info("is_readable") == "info:is_readable"


def test_stream_in_a_deadline_waits_at_most_what_is_left(fake: FakeStream) -> None:
    """Inside ``deadline()`` every timeout is the smaller of its own and the time left."""
    stream = DeadlineStream(fake)
    with deadline(2.0):
        stream.read(1, 5.0)
        stream.write(b"a", None)
        stream.start_tls(None, "h", 0.5)  # type: ignore[arg-type]
        stream.read(1, 1.0)
    (_, read), (_, write), (_, tls), (_, short) = fake.calls
    assert read is not None and 1.5 < read <= 2.0
    assert write is not None and 1.5 < write <= 2.0
    assert (tls, short) == (0.5, 1.0)


@pytest.mark.parametrize(
    ("operation", "error"),
    [
        ("read", httpcore.ReadTimeout),
        ("write", httpcore.WriteTimeout),
        ("start_tls", httpcore.ConnectTimeout),
    ],
)
def test_stream_past_the_deadline_raises_a_timeout(
    fake: FakeStream, operation: str, error: type[Exception]
) -> None:
    """Once the deadline passed, each operation fails with its own kind of timeout."""
    stream = DeadlineStream(fake)
    args: dict[str, tuple[Any, ...]] = {"read": (1,), "write": (b"a",), "start_tls": (None,)}
    with deadline(0.0), pytest.raises(error, match="^the total timeout expired$"):
        getattr(stream, operation)(*args[operation])
    assert fake.calls == []


def test_deadlines_nest_and_end_with_their_block(fake: FakeStream) -> None:
    """An inner deadline applies inside it; leaving it restores the outer one, then none."""
    stream = DeadlineStream(fake)
    with deadline(5.0):
        with deadline(0.0), pytest.raises(httpcore.ReadTimeout):
            stream.read(1, 9.0)
        stream.read(1, 9.0)
    stream.read(1, 9.0)
    (_, inside), (_, outside) = fake.calls
    assert inside is not None and 4.0 < inside <= 5.0
    assert outside == 9.0


# --- reading an answer: raw bytes, capped ----------------------------------------------


def bomb(size: int) -> bytes:
    return gzip.compress(gzip.compress(b"\0" * size))


@pytest.mark.parametrize(
    ("chunks", "limit", "expected"),
    [
        ([], 10, (0, False)),
        ([b"x" * 10], 10, (10, False)),
        ([b"x" * 11], 10, (10, True)),
        ([b"abc"] * 4, 11, (11, True)),
        ([b"abc"] * 4, 12, (12, False)),
    ],
)
def test_read_capped_counts_bytes(
    chunks: list[bytes], limit: int, expected: tuple[int, bool]
) -> None:
    """Up to ``limit`` bytes is read whole; past it, the read stops and says so."""
    assert read_capped(httpx.Response(200, content=iter(chunks)), limit) == expected


def test_read_capped_stops_at_the_chunk_that_crosses_the_limit() -> None:
    """No chunk after the limit is pulled from the network."""
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for n in range(100):
            pulled.append(n)
            yield b"x" * 10

    assert read_capped(httpx.Response(200, content=chunks()), 25) == (25, True)
    assert pulled == [0, 1, 2]


def test_read_capped_never_decompresses() -> None:
    """A double-gzip bomb counts as the bytes sent, not the 16 MiB it inflates to."""
    raw = bomb(16 * 1024 * 1024)
    headers = {"Content-Encoding": "gzip, gzip"}
    response = httpx.Response(200, stream=httpx.ByteStream(raw), headers=headers)
    assert read_capped(response, 1_000_000) == (len(raw), False)


# --- the safe client ----------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Recorder]:
    with recording_server() as recorder:
        yield recorder


def client(*allowed: str, resolver: Any = None) -> httpx.Client:
    return safe_client(AddressPolicy(allowed), connect_timeout=1.0, timeout=2.0, resolver=resolver)


def test_safe_client_reaches_an_allowed_address(receiver: Recorder) -> None:
    """An allowed address is requested, with the Host of the URL."""
    with client("127.0.0.1/32", resolver=lambda host, port: ["127.0.0.1"]) as http:
        port = receiver.url.rsplit(":", 1)[1]
        response = http.post(f"http://hooks.test:{port}/x", content=b"hi")
    assert response.status_code == 200
    assert receiver.requests[0].headers["host"] == f"hooks.test:{port}"


def test_safe_client_refuses_before_connecting(receiver: Recorder) -> None:
    """Without the allow-list, loopback is refused: the server sees nothing."""
    with client() as http, pytest.raises(httpx.ConnectError) as raised:
        http.post(receiver.url, content=b"hi")
    assert isinstance(blocked_cause(raised.value), BlockedAddress)
    assert receiver.requests == []


def test_safe_client_ignores_proxies_from_the_environment(
    receiver: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY would connect on our behalf, past the check: it is never used."""
    with recording_server() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("ALL_PROXY", proxy.url)
        with client("127.0.0.1/32") as http:
            assert http.post(receiver.url + "/direct", content=b"hi").status_code == 200
        assert proxy.requests == []
    assert [r.path for r in receiver.requests] == ["/direct"]


def test_safe_client_verifies_certificates_by_default_with_its_own_bundle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TLS is verified unless told otherwise; SSL_CERT_FILE from the environment is not read."""
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
    with safe_client(AddressPolicy(), connect_timeout=1.0, timeout=1.0) as http:
        pool = http._transport._pool  # type: ignore[attr-defined]
        assert pool._ssl_context.verify_mode == ssl.CERT_REQUIRED
        assert pool._ssl_context.check_hostname is True


def test_safe_transport_verifies_certificates_by_default() -> None:
    """Built directly, the transport verifies TLS too."""
    transport = SafeTransport(AddressPolicy())
    context = transport._pool._ssl_context
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    transport.close()


def test_safe_client_settings() -> None:
    """No redirects, the given timeouts, the pool's limits and the policy's backend."""
    policy = AddressPolicy()
    http = safe_client(policy, connect_timeout=1.5, timeout=4.0, verify=False)
    with http:
        assert http.follow_redirects is False
        assert http.timeout == httpx.Timeout(4.0, connect=1.5)
        pool = http._transport._pool  # type: ignore[attr-defined]
        assert (pool._max_connections, pool._max_keepalive_connections) == (100, 20)
        assert pool._keepalive_expiry == outbound.DEFAULT_LIMITS.keepalive_expiry
        assert pool._ssl_context.verify_mode.name == "CERT_NONE"
        assert isinstance(pool._network_backend, SafeNetworkBackend)
        assert pool._network_backend.policy is policy


def test_redirects_are_not_followed(receiver: Recorder) -> None:
    """A 3xx is returned as it is; its Location is never requested."""
    from tests.jobs.recorder import Reply

    receiver.reply(Reply(302, {}, {"Location": receiver.url + "/elsewhere"}))
    with client("127.0.0.1/32") as http:
        assert http.post(receiver.url + "/hook").status_code == 302
    assert [r.path for r in receiver.requests] == ["/hook"]


# --- Retry-After, re-exported from the protocol layer -----------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("Sun, 29 Nov 2026 10:01:00 GMT", 60.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("²", None),
        ("9" * 400, None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    """Retry-After is read as seconds or an HTTP date; anything else is ignored."""
    now = 1795946400.0  # 2026-11-29 10:00 UTC
    assert parse_retry_after(value, now=now) == seconds


def test_parse_retry_after_defaults_to_the_current_time() -> None:
    """Without ``now``, an HTTP date is measured from the present."""
    from email.utils import formatdate

    seconds = parse_retry_after(formatdate(time.time() + 100, usegmt=True))
    assert seconds is not None and 95 <= seconds <= 100


# --- callbacks ---------------------------------------------------------------------------


def test_callback_decodes_base64_and_camel_case() -> None:
    """A callback body becomes a typed Callback with bytes bodies."""
    callback = parse_callback(
        {"status": 500, "body": "eyJhIjoxfQ==", "sourceBody": "aGk", "maxRetries": 3, "x": 1}
    )
    assert (callback.status, callback.max_retries, callback.source_body) == (500, 3, b"hi")
    assert callback.json_body() == {"a": 1}
    assert not callback.is_failure


def test_callback_without_status_is_invalid() -> None:
    """status is required."""
    with pytest.raises(ValidationError, match="status"):
        parse_callback({"body": ""})
