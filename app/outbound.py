"""Outbound HTTP to addresses chosen by users: SSRF-safe, pooled, bounded.

``safe_client()`` returns an httpx client whose every TCP connection goes through
``AddressPolicy``: the host is resolved once, **every** resolved address is checked, and
the socket connects to the very IP that was checked (no DNS-rebinding window between
check and connect). Redirects are never followed and proxies from the environment are
ignored (a proxy would connect on our behalf, past the check).

Which addresses: IANA's IPv4 and IPv6 Special-Purpose Address Registries decide. A block
whose "Globally Reachable" is False (or N/A) is refused, as are multicast, the reserved
240.0.0.0/4 and, in IPv6, everything outside global unicast 2000::/3. The forms that carry
an IPv4 address inside an IPv6 one (IPv4-mapped ``::ffff:0:0/96``, NAT64 ``64:ff9b::/96``,
6to4 ``2002::/16``, Teredo ``2001::/32``) are judged by the IPv4 they carry: an IPv6-only
host reaches public IPv4 through NAT64, and private IPv4 through none of them.
``allowed_networks`` opens chosen networks on purpose; a cloud metadata address stays
refused inside them unless it is listed as an address of its own.

``check_url(url)`` tells at validation time whether httpx can request ``url`` at all (a
bad URL is the sender's mistake, not an outage to retry). ``deadline(seconds)`` bounds a
whole request (name lookup, connect, TLS, every read and write) by one total time, which
httpx's per-operation timeouts cannot: a target dripping one byte per second never trips
a read timeout. ``read_capped`` reads an answer's bytes as sent, never decompressed, up to
a limit: a 2 KB gzip bomb stays 2 KB.

Also here, because every job that calls a remote service needs it: ``UpstreamError`` (the
remote failed; QStash retries with backoff). ``Retry-After`` is read by
``app.qstash.timing`` and URLs are redacted by ``app.qstash.redact``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import httpcore
import httpx
from werkzeug.exceptions import BadGateway

from app.errors import ConfigurationError
from app.qstash.redact import scrub

if TYPE_CHECKING:
    from flask import Flask

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

#: Metadata endpoints, named apart (Alibaba's lives in CGNAT, which a VPN may open).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


#: IANA IPv4 Special-Purpose Address Registry, blocks not globally reachable (first
#: match names the reason), with multicast (224.0.0.0/4) from the multicast registry.
_IPV4_REFUSED: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(cidr), name)
    for cidr, name in (
        ("0.0.0.0/32", "unspecified"),
        ("0.0.0.0/8", "this network"),
        ("10.0.0.0/8", "private-use"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private-use"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "deprecated 6to4 relay anycast"),
        ("192.168.0.0/16", "private-use"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "limited broadcast"),
        ("240.0.0.0/4", "reserved"),
    )
)
#: IANA IPv6 Special-Purpose Address Registry, blocks not globally reachable, with
#: multicast and the deprecated site-local block from the IPv6 Address Space registry.
_IPV6_REFUSED: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(cidr), name)
    for cidr, name in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignments"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "SRv6 segment identifiers"),
        ("fc00::/7", "unique-local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)
#: Registry entries marked globally reachable inside the refused blocks above.
_GLOBAL_EXCEPTIONS = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "192.0.0.9/32",  # Port Control Protocol anycast
        "192.0.0.10/32",  # TURN anycast
        "2001:1::1/128",  # Port Control Protocol anycast
        "2001:1::2/128",  # TURN anycast
        "2001:1::3/128",  # DNS-SD service registration protocol anycast
        "2001:3::/32",  # AMT
        "2001:4:112::/48",  # AS112-v6
        "2001:20::/28",  # ORCHIDv2
        "2001:30::/28",  # drone remote ID entity tags
    )
)
_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UpstreamError(BadGateway):
    """A remote service failed in a way worth retrying: 502, QStash retries with backoff.

    The receiver answers werkzeug HTTP errors as JSON without logging a traceback: a
    flaky remote is an expected outcome, not a bug.
    """

    def __init__(self, description: str) -> None:
        super().__init__(description=description)


class BlockedAddress(httpcore.ConnectError):
    """The host resolves to an address that outbound requests must not reach."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"{host} resolves to {address} ({reason}): refused")
        self.host = host
        self.address = address
        self.reason = reason


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo  # the Teredo server and the client behind its NAT
    if address in _NAT64:
        return (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF),)
    return ()


def _special_purpose(address: IPAddress) -> str | None:
    """Return the registry's name for ``address`` if it is not globally reachable."""
    if any(address in network for network in _GLOBAL_EXCEPTIONS):
        return None
    blocks = _IPV4_REFUSED if address.version == 4 else _IPV6_REFUSED
    for network, name in blocks:
        if address in network:
            return name
    if address.version == 6 and address not in _IPV6_GLOBAL_UNICAST:
        return "reserved by the IETF"
    return None


class AddressPolicy:
    """Decide which IP addresses outbound requests may connect to."""

    def __init__(self, allowed_networks: Iterable[str | Network] = ()) -> None:
        try:
            self.allowed = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks)
        except ValueError as exc:
            raise ConfigurationError(f"WEBHOOK_ALLOWED_NETWORKS: {exc}") from None

    def refusal(self, address: IPAddress) -> str | None:
        """Return why ``address`` is refused, or None if it may be connected to."""
        if address in METADATA_ADDRESSES and ipaddress.ip_network(address) not in self.allowed:
            return "cloud metadata"
        if any(address in network for network in self.allowed):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            inner = _embedded_ipv4(address)
            for ipv4 in inner:
                reason = self.refusal(ipv4)
                if reason is not None:
                    return f"wraps {ipv4}: {reason}"
            if inner:
                return None
        return _special_purpose(address)

    def check(self, host: str, addresses: list[str]) -> str:
        """Return the address to connect to; raise ``BlockedAddress`` if any is refused."""
        if not addresses:
            raise BlockedAddress(host, "nothing", "the name did not resolve")
        for raw in addresses:
            try:  # without its zone ("%eth0"), which would hide it from METADATA_ADDRESSES
                address = ipaddress.ip_address(raw.partition("%")[0])
            except ValueError:
                raise BlockedAddress(host, repr(raw), "not an IP address") from None
            reason = self.refusal(address)
            if reason is not None:
                raise BlockedAddress(host, raw, reason)
        return addresses[0]


MAX_URL_CHARS = 2048
_SCHEMES = ("http", "https")
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")


def check_url(url: str) -> httpx.URL:
    """Return ``url`` as httpx will request it; raise ``ValueError`` saying why it cannot be.

    The class of URLs a URL validator passes but a request fails on: IPv4 with leading
    zeros, full-width digits, invalid IDNA, ports out of range, labels over 63 characters.
    """
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"longer than {MAX_URL_CHARS} characters")
    try:
        parsed = httpx.URL(url)
        named = parsed.host  # decoding the IDNA name, as the request will: xn--a.com fails
    except (httpx.InvalidURL, ValueError) as exc:  # idna's errors are UnicodeErrors
        raise ValueError(f"cannot be requested: {scrub(str(exc), url)}") from None
    if parsed.scheme not in _SCHEMES:
        raise ValueError("the scheme must be http or https")
    if not named:
        raise ValueError("no host")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ValueError(f"port {parsed.port} is out of range")
    host = parsed.raw_host.decode()
    if ":" in host:  # an IPv6 literal, without its brackets; "%25eth0" names this host's link
        if ipaddress.IPv6Address(host).scope_id is not None:
            raise ValueError(f"{host!r} is an IPv6 address with a zone")
    elif len(host) > 253 or not all(_LABEL.fullmatch(label) for label in _labels(host)):
        raise ValueError(f"{host!r} is not a host name or an IP address")
    return parsed


def split_credentials(url: str | httpx.URL) -> tuple[httpx.URL, httpx.BasicAuth | None]:
    """Return ``url`` without its userinfo, and the Basic auth that userinfo stands for.

    httpx sends a URL's userinfo as Basic auth too, but it also logs the URL with it
    ("HTTP Request: POST http://user:pass@…" at INFO): requested as URL plus ``auth``,
    the credentials reach the server and no log line.
    """
    parsed = httpx.URL(url)
    if not parsed.userinfo:
        return parsed, None
    auth = httpx.BasicAuth(parsed.username, parsed.password)
    return parsed.copy_with(userinfo=b""), auth


def _labels(host: str) -> list[str]:
    return host[:-1].split(".") if host.endswith(".") else host.split(".")


def resolve(host: str, port: int) -> list[str]:
    """Resolve ``host`` to its IP addresses (literal IPs resolve to themselves)."""
    infos = socket.getaddrinfo(host, None)  # one entry per socket type: deduplicated
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


#: Lookups still waiting on a slow name server (each ends at the resolver's own timeout,
#: after the request gave up on it): past this many, new lookups fail at once instead of
#: piling up threads.
MAX_PENDING_LOOKUPS = 32
_pending_lookups = threading.BoundedSemaphore(MAX_PENDING_LOOKUPS)


def _new_pending_lookups() -> None:
    global _pending_lookups
    _pending_lookups = threading.BoundedSemaphore(MAX_PENDING_LOOKUPS)


os.register_at_fork(after_in_child=_new_pending_lookups)  # a child has none of the threads


def lookup(resolver: Resolver, host: str, port: int, timeout: float | None) -> list[str]:
    """Return ``resolver(host, port)``, waiting for it no longer than ``timeout`` seconds.

    ``getaddrinfo`` cannot be interrupted, so it runs in a thread of its own that the
    caller stops waiting for at the timeout.
    """
    if not _pending_lookups.acquire(blocking=False):
        raise httpcore.ConnectError(f"cannot resolve {host}: too many lookups pending")
    outcome: list[list[str] | Exception] = []
    finished = threading.Event()
    semaphore = _pending_lookups

    def run() -> None:
        try:
            outcome.append(resolver(host, port))
        except Exception as exc:  # handed to the waiting caller
            outcome.append(exc)
        finally:
            semaphore.release()
            finished.set()

    threading.Thread(target=run, name=f"lookup {host}", daemon=True).start()
    if not finished.wait(timeout):
        raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout} s")
    result = outcome[0]
    if isinstance(result, Exception):
        raise result
    return result


_deadline: ContextVar[float | None] = ContextVar("outbound_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound every network operation of the requests made in this block by ``seconds`` total."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def _remaining(timeout: float | None, error: type[Exception]) -> float | None:
    end = _deadline.get()
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise error("the total timeout expired")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation also respects the current ``deadline``."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Read, waiting no longer than the deadline allows."""
        return self._stream.read(max_bytes, _remaining(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Write, waiting no longer than the deadline allows."""
        self._stream.write(buffer, _remaining(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        """Close the underlying stream."""
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        """Upgrade to TLS within the deadline."""
        remaining = _remaining(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, remaining))

    def get_extra_info(self, info: str) -> Any:
        """Pass through (the pool asks whether an idle connection is still readable)."""
        return self._stream.get_extra_info(info)


class SafeNetworkBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to addresses the policy accepts."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver | None = None) -> None:
        self.policy = policy
        self.resolver = resolver

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """Resolve, check every address, then connect to the checked one."""
        wait = _remaining(timeout, httpcore.ConnectTimeout)
        try:
            addresses = lookup(self.resolver or resolve, host, port, wait)
        except ValueError as exc:  # the idna codec's UnicodeError: a name never looked up
            raise BlockedAddress(host, "nothing", f"not a name to look up: {exc}") from exc
        except (OSError, OverflowError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        address = self.policy.check(host, addresses)
        timeout = _remaining(timeout, httpcore.ConnectTimeout)
        stream = super().connect_tcp(address, port, timeout, local_address, socket_options)
        return DeadlineStream(stream)


class SafeTransport(httpx.HTTPTransport):
    """An httpx transport whose connection pool uses ``SafeNetworkBackend``."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver | None = None,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        context = httpx.create_ssl_context(verify=verify, trust_env=False)
        super().__init__(verify=context)
        # HTTPTransport has no network_backend option: rebuild its pool with one.
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=SafeNetworkBackend(policy, resolver),
        )


def safe_client(
    policy: AddressPolicy,
    *,
    connect_timeout: float,
    timeout: float,
    resolver: Resolver | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.Client:
    """Return a pooled client that never follows redirects nor reaches refused addresses."""
    # An explicit transport also keeps proxies from the environment (HTTP_PROXY…) out.
    return httpx.Client(
        transport=SafeTransport(policy, resolver=resolver, verify=verify),
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        follow_redirects=False,
    )


def blocked_cause(exc: BaseException) -> BlockedAddress | None:
    """Return the ``BlockedAddress`` behind an httpx error, if that is what it was."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BlockedAddress):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def read_capped(response: httpx.Response, limit: int) -> tuple[int, bool]:
    """Read the body's bytes as sent, at most ``limit`` of them: ``(read, truncated)``.

    Raw bytes, never decompressed: the limit counts what crossed the network, so a
    ``Content-Encoding: gzip, gzip`` answer that would inflate to a gigabyte stays as
    small as it was sent (ask for ``Accept-Encoding: identity`` too). Memory is one
    network read at most.
    """
    read = 0
    for chunk in response.iter_raw():
        read += len(chunk)
        if read > limit:
            return limit, True
    return read, False


#: Where an app keeps its configured client (with the pid that made it: a forked worker
#: must not share its parent's pooled sockets).
CLIENT_EXTENSION = "qstash_jobs.webhook_client"


def configured_client(app: Flask) -> httpx.Client:
    """Return this process's pooled, SSRF-safe client for ``app``'s ``WEBHOOK_*`` settings.

    deliver-webhook and a workflow's ``ctx.call`` share it.
    """
    cached = app.extensions.get(CLIENT_EXTENSION)
    if cached is not None and cached[0] == os.getpid():
        client: httpx.Client = cached[1]
        return client
    config = app.config
    client = safe_client(
        AddressPolicy(config["WEBHOOK_ALLOWED_NETWORKS"]),
        connect_timeout=config["WEBHOOK_CONNECT_TIMEOUT"],
        timeout=config["WEBHOOK_TIMEOUT"],
    )
    app.extensions[CLIENT_EXTENSION] = (os.getpid(), client)
    return client
