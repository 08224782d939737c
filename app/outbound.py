"""Outbound HTTP to addresses chosen by users: SSRF-safe, pooled, bounded.

``safe_client()`` returns an httpx client whose every TCP connection goes through
``AddressPolicy``: the host is resolved once, **every** resolved address is checked, and
the socket connects to the very IP that was checked (no DNS-rebinding window between
check and connect). Refused: loopback, private, link-local (cloud metadata lives there),
CGNAT, multicast, reserved, unspecified and anything not globally routable, also when
wrapped in IPv6 (IPv4-mapped, 6to4, Teredo, NAT64). ``allowed_networks`` opens chosen
networks on purpose. Redirects are never followed and proxies from the environment are
ignored (a proxy would connect on our behalf, past the check).

``deadline(seconds)`` bounds a whole request (connect, TLS, every read and write) by one
total time, which httpx's per-operation timeouts cannot: a target dripping one byte per
second never trips a read timeout.

Also here, because every job that calls a remote service needs them: ``UpstreamError``
(the remote failed; QStash retries with backoff) and ``parse_retry_after``.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx
from werkzeug.exceptions import BadGateway

from app.errors import ConfigurationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

#: Metadata endpoints that are not all covered by the ranges (e.g. Alibaba's lives in CGNAT).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


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


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Return the seconds a ``Retry-After`` header asks to wait (seconds or HTTP date)."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _classify(address: IPAddress) -> str | None:
    """Return why ``address`` is refused, or None if it is a public unicast address."""
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    )
    for reason, hit in checks:
        if hit:
            return reason
    if not address.is_global:  # 100.64.0.0/10 (CGNAT) and other special ranges
        return "not globally routable"
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
        if any(address in network for network in self.allowed):
            return None
        reason = _classify(address)
        if reason is None and isinstance(address, ipaddress.IPv6Address):
            inner = _embedded_ipv4(address)
            inner_reason = None if inner is None else self.refusal(inner)
            if inner_reason is not None:
                return f"wraps {inner}: {inner_reason}"
        return reason

    def check(self, host: str, addresses: list[str]) -> str:
        """Return the address to connect to; raise ``BlockedAddress`` if any is refused."""
        if not addresses:
            raise BlockedAddress(host, "nothing", "the name did not resolve")
        for raw in addresses:
            reason = self.refusal(ipaddress.ip_address(raw.split("%", 1)[0]))
            if reason is not None:
                raise BlockedAddress(host, raw, reason)
        return addresses[0]


def resolve(host: str, port: int) -> list[str]:
    """Resolve ``host`` to its IP addresses (literal IPs resolve to themselves)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


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
        try:
            addresses = (self.resolver or resolve)(host, port)
        except OSError as exc:
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
        super().__init__(verify=verify, limits=limits, trust_env=False)
        # HTTPTransport has no network_backend option: rebuild its pool with one.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
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
    return httpx.Client(
        transport=SafeTransport(policy, resolver=resolver, verify=verify),
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        follow_redirects=False,
        trust_env=False,
    )


def blocked_cause(exc: BaseException) -> BlockedAddress | None:
    """Return the ``BlockedAddress`` behind an httpx error, if that is what it was."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BlockedAddress):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
