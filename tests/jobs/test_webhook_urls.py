"""deliver-webhook with structured hostile URLs: a 489, or a connection to an allowed address.

URLs are built from parts (scheme, userinfo, host in every spelling: dotted, octal, hex,
integer, short, leading zeros, full-width digits, IPv6 literals of every registry block,
IDN, names resolving anywhere; port; path) and sent through the real schema, client and
policy. Names resolve through a table (no DNS); connections are recorded, not made. The
oracle for "allowed" is the registry table of ``test_outbound``, written apart from the
policy. Whatever the URL, the password it carries is in no answer.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import httpcore
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import outbound
from app.testing import DeliveryClient
from tests.jobs.test_outbound import ADDRESSES, reachable

NAMES = {
    "hooks.example": ["93.184.216.34"],
    "v6.example": ["2606:2800:220:1:248:1893:25c8:1946"],
    "nat64.example": ["64:ff9b::808:808"],
    "internal.example": ["10.0.0.7"],
    "mixed.example": ["93.184.216.34", "10.0.0.7"],
    "metadata.example": ["169.254.169.254"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "localhost": ["127.0.0.1", "::1"],
}


def table_resolve(host: str, port: int) -> list[str]:
    """Resolve like getaddrinfo for literals (every legacy IPv4 spelling), else by NAMES."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        found = NAMES.get(host.rstrip(".").lower())
        if found is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return found
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


OCTETS = st.tuples(*[st.integers(0, 255)] * 4)
FULL_WIDTH = str.maketrans("0123456789.", "０１２３４５６７８９．")
LABEL = st.text(
    alphabet=st.characters(codec="utf-8", categories=["Ll", "Lu", "Nd", "Pd"]),
    min_size=1,
    max_size=12,
)


def literal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


HOSTS = st.one_of(
    OCTETS.map(lambda o: ".".join(map(str, o))),
    OCTETS.map(lambda o: ".".join(f"0{n:o}" for n in o)),  # octal
    OCTETS.map(lambda o: ".".join(f"0x{n:x}" for n in o)),  # hex
    OCTETS.map(lambda o: ".".join(f"{n:03d}" for n in o)),  # leading zeros
    OCTETS.map(lambda o: ".".join(map(str, o)).translate(FULL_WIDTH)),
    st.integers(0, 2**32 - 1).map(str),  # 2130706433
    st.integers(0, 2**32 - 1).map(hex),  # 0x7f000001
    st.tuples(st.integers(0, 255), st.integers(0, 2**24 - 1)).map(lambda t: f"{t[0]}.{t[1]}"),
    ADDRESSES.map(literal),
    st.sampled_from(sorted(NAMES)).flatmap(
        lambda name: st.sampled_from([name, name.upper(), name + "."])
    ),
    st.lists(LABEL, min_size=1, max_size=3).map(lambda labels: ".".join(labels) + ".example"),
    st.sampled_from(
        [
            "xn--a.com",
            "xn--",
            "a..b",
            "-a.com",
            "a" * 64 + ".com",
            "ex ample.com",
            "%31%32%37.0.0.1",
            "[::ffff:127.0.0.1]",
            "[::1%25eth0]",
            "[fe80::1%25eth0]",
            "127.0.0.1.",
            "",
        ]
    ),
)
SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;="
USERINFO = st.one_of(
    st.just(""),
    st.builds(
        lambda user, secret: f"{user}:pw-{secret}@",
        st.text(alphabet=SAFE, max_size=6),
        st.text(alphabet=SAFE + "%", min_size=4, max_size=10),
    ),
    st.builds(lambda token: f"tok-{token}@", st.text(alphabet=SAFE, min_size=4, max_size=10)),
)
URLS = st.builds(
    "{}://{}{}{}{}".format,
    st.sampled_from(["http", "https", "HTTP", "ftp", "file"]),
    USERINFO,
    HOSTS,
    st.one_of(st.just(""), st.integers(0, 70000).map(lambda n: f":{n}")),
    st.one_of(st.just(""), st.text(alphabet=SAFE + "/?#@%:", max_size=16).map("/{}".format)),
)


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    made: list[tuple[str, int]] = []

    def connect_tcp(self: Any, host: str, port: int, *args: Any, **kwargs: Any) -> None:
        made.append((host, port))
        raise httpcore.ConnectError("recorded, not connected")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)
    monkeypatch.setattr(outbound, "resolve", table_resolve)
    return made


def secret_of(url: str) -> str | None:
    """Return the credential the URL carries (the part an attacker must not read back)."""
    head = url.split("://", 1)[-1].split("/", 1)[0]
    if "@" not in head:
        return None
    userinfo = head.rsplit("@", 1)[0]
    return userinfo.partition(":")[2] or userinfo


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(url=URLS)
def test_any_url_is_refused_or_reaches_only_allowed_addresses(
    client: DeliveryClient, connections: list[tuple[str, int]], url: str
) -> None:
    """489 (bad URL or refused address) or an attempt on a globally reachable address only."""
    connections.clear()
    response = client.deliver(
        "deliver-webhook",
        {
            "webhookId": "wh_1",
            "eventType": "e",
            "payload": None,
            "targetUrl": url,
            "secret": "s",
        },
    )
    assert response.status_code in (489, 503), (url, response.get_json())
    for address, port in connections:
        assert reachable(ipaddress.ip_address(address)), (url, address)
        assert 0 < port < 65536, (url, port)
    if response.status_code == 503:
        assert "could not be reached" in response.get_json()["message"], url
    secret = secret_of(url)
    if secret is not None and len(secret) >= 4:
        assert secret not in response.get_data(as_text=True), url
