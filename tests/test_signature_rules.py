"""verify()'s rules one by one, as a caller sees them: date claims, spelling, JSON, keys, claims.

Every token here is correctly signed unless a test says otherwise, so it gets past the HMAC
and reaches the rule under test; the clock is fixed (``now=NOW``) with a 5 s tolerance.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.errors import (
    ConfigurationError,
    MalformedSignature,
    SignatureExpired,
    SignatureNotYetValid,
)
from app.jobs import JobRegistry
from app.qstash.signature import body_hash, verify
from tests.conftest import APP_URL, CURRENT_KEY, NEXT_KEY, TEST_CONFIG
from tests.tokens import forge, forge_raw

URL = APP_URL + "/api/jobs/noop"
KEYS = (CURRENT_KEY, NEXT_KEY)
BODY = b'{"hello":"world"}'
NOW = 1_700_000_000
TOLERANCE = 5
HS256 = {"alg": "HS256", "typ": "JWT"}
LARGEST = sys.float_info.max


def claims(**overrides: Any) -> dict[str, Any]:
    """Return QStash's claims for BODY at URL issued at NOW; a ``None`` override drops one."""
    base: dict[str, Any] = {
        "iss": "Upstash",
        "sub": URL,
        "exp": NOW + 300,
        "nbf": 0,
        "iat": NOW,
        "jti": "jwt_rules",
        "body": body_hash(BODY),
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def token(key: str = CURRENT_KEY, header: dict[str, Any] | None = None, **overrides: Any) -> str:
    """Return a token for ``claims(**overrides)`` signed with ``key``."""
    return forge(HS256 if header is None else header, claims(**overrides), key)


def raw_token(**literals: str) -> str:
    """Return a signed token whose payload spells the given claims as raw JSON literals."""
    fields = {name: json.dumps(value) for name, value in claims().items()}
    fields.update(literals)
    text = "{" + ", ".join(f"{json.dumps(name)}: {value}" for name, value in fields.items()) + "}"
    return forge_raw(json.dumps(HS256).encode(), text.encode(), CURRENT_KEY)


def check(tok: str, body: bytes = BODY, **options: Any) -> dict[str, Any]:
    """Verify at NOW with a 5 s tolerance (both overridable)."""
    kwargs: dict[str, Any] = {"url": URL, "keys": KEYS, "now": NOW, "tolerance": TOLERANCE}
    kwargs.update(options)
    return verify(tok, body, **kwargs)


# --- date claims: finite JSON numbers only --------------------------------------------------

HOSTILE_DATES = {
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "1e999": "1e999",
    "-1e999": "-1e999",
    "integer beyond a double": str(10**400),
    "negative integer beyond a double": str(-(10**400)),
    "one past the largest double": str(int(LARGEST) + 1),
    "one past the smallest double": str(-int(LARGEST) - 1),
    "true": "true",
    "false": "false",
    "null": "null",
    "numeric string": '"1700000300"',
    "list": "[1700000300]",
    "object": '{"seconds": 1700000300}',
}


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("literal", list(HOSTILE_DATES.values()), ids=list(HOSTILE_DATES))
def test_date_claims_must_be_finite_numbers(claim: str, literal: str) -> None:
    """exp/nbf/iat that are not a finite number are refused as malformed, naming the claim."""
    with pytest.raises(MalformedSignature, match=f"the '{claim}' claim must be a"):
        check(raw_token(**{claim: literal}))


@pytest.mark.parametrize(
    ("literal", "shown"), [('"soon"', "'soon'"), ("[1]", "<list>"), ("true", "<bool>")]
)
def test_a_date_of_the_wrong_type_is_shown_in_the_error(literal: str, shown: str) -> None:
    """The message names the claim and shows what it held (short strings, else the type)."""
    with pytest.raises(MalformedSignature) as info:
        check(raw_token(exp=literal))
    assert str(info.value) == f"the 'exp' claim must be a number, not {shown}"


def test_a_non_finite_date_is_shown_in_the_error() -> None:
    """A NaN or out-of-range date is shown (its first 40 characters)."""
    with pytest.raises(MalformedSignature) as info:
        check(raw_token(nbf="NaN"))
    assert str(info.value) == "the 'nbf' claim must be a finite number, not nan"
    with pytest.raises(MalformedSignature) as info:
        check(raw_token(iat=str(10**400)))
    assert str(info.value) == "the 'iat' claim must be a finite number, not " + "1" + "0" * 39


@pytest.mark.parametrize(
    ("claim", "literal"),
    [
        ("exp", repr(LARGEST)),
        ("exp", f"{NOW + 0.5}"),
        ("nbf", "-0.0"),
        ("nbf", "-1"),
        ("nbf", repr(-LARGEST)),
        ("nbf", "0.0"),
        ("iat", "-0"),
        ("iat", repr(-LARGEST)),
        ("iat", f"{NOW}.25"),
        ("iat", "1.7e9"),
    ],
)
def test_any_finite_number_is_a_date(claim: str, literal: str) -> None:
    """A finite JSON number, fractional, negative or as large as a double, is a valid date."""
    assert check(raw_token(**{claim: literal}))[claim] == json.loads(literal)


def test_nan_expiry_is_refused_where_the_official_sdk_refuses_it_too() -> None:
    """PyJWT (the official SDK's verifier) refuses exp NaN; so does verify, not 'never expires'."""
    with pytest.raises(MalformedSignature, match="'exp' claim must be a finite number"):
        check(raw_token(exp="NaN"), now=None)


IAT_LATE = "the token is not valid yet (iat is in the future)"
NBF_LATE = "the token is not valid yet (nbf is in the future)"
EXPIRED = "the token has expired (exp is in the past)"


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"iat": NOW + TOLERANCE + 0.5}, SignatureNotYetValid, IAT_LATE),
        ({"iat": NOW + TOLERANCE + 1}, SignatureNotYetValid, IAT_LATE),
        ({"nbf": NOW + TOLERANCE + 0.5}, SignatureNotYetValid, NBF_LATE),
        ({"exp": NOW - TOLERANCE}, SignatureExpired, EXPIRED),
        ({"exp": NOW - TOLERANCE - 1}, SignatureExpired, EXPIRED),
    ],
    ids=["iat +0.5", "iat +1", "nbf +0.5", "exp at bound", "exp -1"],
)
def test_dates_just_beyond_the_tolerance_are_refused(
    overrides: dict[str, Any], error: type[Exception], message: str
) -> None:
    """iat/nbf later than now + tolerance, or exp at or before now - tolerance, are refused."""
    with pytest.raises(error) as info:
        check(token(**overrides))
    assert str(info.value) == message


@pytest.mark.parametrize(
    "overrides",
    [
        {"iat": NOW + TOLERANCE},
        {"nbf": NOW + TOLERANCE},
        {"exp": NOW - TOLERANCE + 0.5},
        {"exp": NOW - TOLERANCE + 1},
        {"iat": NOW + TOLERANCE, "nbf": NOW + TOLERANCE, "exp": NOW - TOLERANCE + 1},
    ],
)
def test_dates_exactly_at_the_tolerance_are_accepted(overrides: dict[str, Any]) -> None:
    """iat/nbf equal to now + tolerance, and exp just after now - tolerance, still verify."""
    assert check(token(**overrides))["sub"] == URL


def test_without_tolerance_the_bounds_are_now_itself() -> None:
    """With tolerance 0, iat = now verifies, iat = now + 1 does not, exp = now has expired."""
    assert check(token(iat=NOW), tolerance=0)["iat"] == NOW
    with pytest.raises(SignatureNotYetValid):
        check(token(iat=NOW + 1), tolerance=0)
    with pytest.raises(SignatureExpired):
        check(token(exp=NOW), tolerance=0)


def test_iat_is_optional() -> None:
    """A token without iat verifies (QStash always sends it, but it is not required)."""
    assert "iat" not in check(token(iat=None))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tolerance": float("nan")}, "tolerance must be a finite number"),
        ({"tolerance": float("inf")}, "tolerance must be a finite number"),
        ({"tolerance": -1}, "tolerance must be a finite number"),
        ({"now": float("nan")}, "now must be a finite unix time"),
        ({"now": float("-inf")}, "now must be a finite unix time"),
    ],
)
def test_a_clock_that_cannot_expire_anything_is_a_caller_error(
    options: dict[str, Any], message: str
) -> None:
    """A NaN/infinite tolerance or clock would accept expired tokens: ValueError instead."""
    expired = token(exp=NOW - 3600, iat=NOW - 3900)
    with pytest.raises(ValueError, match=message):
        check(expired, **options)


@pytest.mark.parametrize(
    "tolerance",
    [float("nan"), float("inf"), -1, "5", True, None],
    ids=["nan", "inf", "negative", "string", "bool", "none"],
)
def test_configured_tolerance_must_be_finite(tolerance: Any) -> None:
    """QSTASH_CLOCK_TOLERANCE that is not a finite number >= 0 stops start-up."""
    with pytest.raises(ConfigurationError, match="QSTASH_CLOCK_TOLERANCE must be a finite"):
        create_app({**TEST_CONFIG, "QSTASH_CLOCK_TOLERANCE": tolerance}, registry=JobRegistry())


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity"])
def test_tolerance_spelled_as_json_extension_stops_start_up(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FLASK_QSTASH_CLOCK_TOLERANCE=NaN (json.loads reads it as a float) stops start-up."""
    monkeypatch.setenv("FLASK_QSTASH_CLOCK_TOLERANCE", raw)
    with pytest.raises(ConfigurationError, match="QSTASH_CLOCK_TOLERANCE"):
        create_app(TEST_CONFIG, registry=JobRegistry())


def test_a_finite_tolerance_still_starts() -> None:
    """Zero and fractional tolerances are fine."""
    for tolerance in (0, 2.5):
        app: Flask = create_app(
            {**TEST_CONFIG, "QSTASH_CLOCK_TOLERANCE": tolerance}, registry=JobRegistry()
        )
        assert app.config["QSTASH_CLOCK_TOLERANCE"] == tolerance
