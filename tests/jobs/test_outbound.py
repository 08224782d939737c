"""app.outbound: the address policy, Retry-After parsing; app.qstash.callbacks parsing."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest
from marshmallow import ValidationError

from app.outbound import AddressPolicy, BlockedAddress, parse_retry_after
from app.qstash.callbacks import parse_callback


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "not globally routable"),
        ("224.0.0.251", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "wraps 127.0.0.1"),
    ],
)
def test_policy_names_why_an_address_is_refused(address: str, reason: str) -> None:
    """Each refused class comes with the reason logged and returned to QStash."""
    refusal = AddressPolicy().refusal(ipaddress.ip_address(address))
    assert refusal is not None and reason in refusal


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
def test_policy_accepts_public_addresses(address: str) -> None:
    """Globally routable unicast addresses are accepted."""
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) is None


def test_allowed_networks_open_only_themselves() -> None:
    """An allowed CIDR opens its addresses and nothing next to it."""
    policy = AddressPolicy(["10.8.0.0/16"])
    assert policy.refusal(ipaddress.ip_address("10.8.3.4")) is None
    assert policy.refusal(ipaddress.ip_address("10.9.0.1")) is not None


def test_check_refuses_if_any_address_is_blocked() -> None:
    """One blocked address among several refuses the host."""
    with pytest.raises(BlockedAddress, match="10.0.0.7"):
        AddressPolicy().check("mixed.example", ["93.184.216.34", "10.0.0.7"])


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), ("Sun, 29 Nov 2026 10:01:00 GMT", 60.0), ("soon", None), ("", None)],
)
def test_parse_retry_after(value: str, seconds: float | None) -> None:
    """Retry-After is read as seconds or an HTTP date; anything else is ignored."""
    now = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    assert parse_retry_after(value, now=now) == seconds


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
