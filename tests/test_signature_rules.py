"""verify()'s rules one by one, as a caller sees them: date claims, spelling, JSON, keys, claims.

Every token here is correctly signed unless a test says otherwise, so it gets past the HMAC
and reaches the rule under test; the clock is fixed (``now=NOW``) with a 5 s tolerance.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.errors import (
    AlgorithmNotAllowed,
    BodyHashMismatch,
    ConfigurationError,
    InvalidSignature,
    MalformedSignature,
    MissingClaim,
    SignatureExpired,
    SignatureNotYetValid,
    SubjectMismatch,
    WrongIssuer,
)
from app.jobs import JobRegistry
from app.qstash import signature
from app.qstash.signature import MAX_TOKEN_LENGTH, body_hash, sign, verify
from tests.conftest import APP_URL, CURRENT_KEY, NEXT_KEY, TEST_CONFIG
from tests.tokens import b64url, forge, forge_raw, resign

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


def test_the_default_tolerance_is_zero() -> None:
    """Without a tolerance argument, exp = now has expired and iat = now + 1 is too early."""
    with pytest.raises(SignatureExpired):
        verify(token(exp=NOW), BODY, url=URL, keys=KEYS, now=NOW)
    with pytest.raises(SignatureNotYetValid):
        verify(token(iat=NOW + 1), BODY, url=URL, keys=KEYS, now=NOW)
    assert verify(token(exp=NOW + 1, iat=NOW), BODY, url=URL, keys=KEYS, now=NOW)["exp"] == NOW + 1


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


# --- spelling: three canonical base64url segments ------------------------------------------

GOOD = token()
HEADER, PAYLOAD, SIGNATURE = GOOD.split(".")
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_the_good_token_verifies() -> None:
    """The token the spelling tests start from is valid as it stands."""
    assert check(GOOD)["jti"] == "jwt_rules"


@pytest.mark.parametrize(
    "tok",
    [
        f"{HEADER}.{PAYLOAD}",
        f"{HEADER}.{PAYLOAD}.{SIGNATURE}.",
        f"{HEADER}.{PAYLOAD}.{SIGNATURE}.{SIGNATURE}",
        f"{HEADER}.{PAYLOAD}.x.{PAYLOAD}.{SIGNATURE}",
        f"{HEADER}{PAYLOAD}{SIGNATURE}",
        "...",
        ".",
    ],
    ids=["2 parts", "4 parts, empty", "4 parts", "5 parts (JWE)", "no dots", "3 dots", "1 dot"],
)
def test_a_token_has_exactly_three_parts(tok: str) -> None:
    """Anything but three dot-separated parts is malformed."""
    with pytest.raises(MalformedSignature) as info:
        check(tok)
    assert str(info.value) == "not a JWT: a token has three dot-separated parts"


def _respelled(segment: str, old: str, new: str) -> str:
    assert old in segment
    return segment.replace(old, new)


def _with_url_safe_characters() -> str:
    # A signed token whose payload and signature both contain '-' or '_'.
    for n in range(1000):
        tok = token(jti=f"jwt_~~~??_{n}")
        _, payload, sig = tok.split(".")
        if any(c in payload for c in "-_") and any(c in sig for c in "-_"):
            return tok
    raise AssertionError("no such token")


URL_SAFE = _with_url_safe_characters()


@pytest.mark.parametrize("part", [1, 2])
def test_standard_base64_characters_are_refused(part: int) -> None:
    """'+' and '/' (standard base64, not base64url) make a segment malformed."""
    check(URL_SAFE)
    parts = URL_SAFE.split(".")
    segment = parts[part]
    parts[part] = segment.translate(str.maketrans("-_", "+/"))
    respelled = ".".join(parts)
    if part == 1:  # re-sign: the signing input is the text as spelled
        respelled = resign(".".join(parts[:2]), CURRENT_KEY)
    with pytest.raises(MalformedSignature, match="base64url"):
        check(respelled)


@pytest.mark.parametrize("last", ALPHABET)
def test_every_canonical_spelling_is_read(last: str) -> None:
    """A segment may end in any of the 64 characters: the spelling rule refuses none of them.

    The payload here is 3 raw bytes (not JSON) whose encoding ends in ``last``, so it gets
    past the spelling check to the JSON check.
    """
    payload = bytes([1, 2, ALPHABET.index(last)])
    assert b64url(payload).endswith(last)
    with pytest.raises(MalformedSignature) as info:
        check(forge_raw(json.dumps(HS256).encode(), payload, CURRENT_KEY))
    assert str(info.value) == "not a JWT: the payload is not JSON"


def _padding(segment: str) -> str:
    return "=" * (-len(segment) % 4)


def _padded_payload_token() -> str:
    for n in range(100):
        header, payload, _ = token(jti=f"jwt_{n}").split(".")
        if _padding(payload):
            return resign(f"{header}.{payload}{_padding(payload)}", CURRENT_KEY)
    raise AssertionError("no such token")


def test_even_exact_padding_is_refused() -> None:
    """A segment carries no '=' (RFC 7515), even the standard padding of a correct length."""
    assert _padding(SIGNATURE) == "="
    with pytest.raises(MalformedSignature, match="the signature is not canonical base64url"):
        check(f"{HEADER}.{PAYLOAD}.{SIGNATURE}=")
    with pytest.raises(MalformedSignature, match="the payload is not canonical base64url"):
        check(_padded_payload_token())


@pytest.mark.parametrize(
    "suffix", ["==", "===", "====", "=A", "=" * 5], ids=["2", "3", "4", "inner", "5"]
)
def test_wrong_padding_is_refused(suffix: str) -> None:
    """Padding of any length is malformed: a token has one spelling."""
    with pytest.raises(MalformedSignature, match="base64url"):
        check(f"{HEADER}.{PAYLOAD}.{SIGNATURE}{suffix}")


def test_padding_after_a_complete_segment_is_refused() -> None:
    """'=' after a segment whose length is a multiple of 4 is malformed, signed or not."""
    for n in range(100):
        header, payload, _ = token(jti=f"jwt_{n}").split(".")
        if len(payload) % 4 == 0:
            for pad in ("=", "=="):
                with pytest.raises(MalformedSignature, match="base64url"):
                    check(resign(f"{header}.{payload}{pad}", CURRENT_KEY))
            return
    raise AssertionError("no such token")


def test_set_trailing_bits_are_refused() -> None:
    """A signature re-spelled with set unused bits (same bytes) does not verify.

    The last of 43 characters carries 4 bits of the signature and 2 unused ones; strict
    base64 ignores those, so without this rule one token had four spellings.
    """
    index = ALPHABET.index(SIGNATURE[-1])
    assert index % 4 == 0
    for unused in (1, 2, 3):
        respelled = f"{HEADER}.{PAYLOAD}.{SIGNATURE[:-1]}{ALPHABET[index + unused]}"
        with pytest.raises(MalformedSignature, match="canonical"):
            check(respelled)


@pytest.mark.parametrize(
    "junk",
    [" ", "\n", "\t", "é", "\x00", "!", "*", "%3D"],
    ids=["space", "newline", "tab", "e-acute", "nul", "bang", "star", "percent"],
)
@pytest.mark.parametrize("part", [0, 1, 2])
def test_junk_inside_a_segment_is_refused(junk: str, part: int) -> None:
    """Whitespace, non-ASCII or non-alphabet characters anywhere make the token malformed."""
    parts = GOOD.split(".")
    parts[part] = parts[part][:4] + junk + parts[part][4:]
    name = ("header", "payload", "signature")[part]
    with pytest.raises(MalformedSignature, match=f"^not a JWT: the {name} is not "):
        check(".".join(parts))


@pytest.mark.parametrize("part", [0, 1, 2])
def test_a_lone_surrogate_in_a_segment_is_malformed(part: int) -> None:
    """A str that cannot even be encoded (a lone surrogate) is malformed, not a crash."""
    parts = GOOD.split(".")
    parts[part] = "\ud800" + parts[part]
    with pytest.raises(MalformedSignature, match="is not base64url"):
        check(".".join(parts))


def test_a_segment_of_one_character_too_many_is_refused() -> None:
    """A segment whose length is 1 more than a multiple of 4 cannot be base64url."""
    assert len(SIGNATURE) % 4 == 3
    with pytest.raises(MalformedSignature, match="base64url"):
        check(f"{HEADER}.{PAYLOAD}.{SIGNATURE}AA")


def _token_of_length(length: int) -> tuple[str, str]:
    # Grow the URL (and so sub) until the token is exactly `length` characters.
    url = URL + "?q="
    while True:
        tok = forge(HS256, claims(sub=url), CURRENT_KEY)
        if len(tok) >= length:
            return tok, url
        url += "a" * max(1, (length - len(tok)) * 3 // 4)


def test_tokens_up_to_the_length_limit_verify() -> None:
    """A token of exactly MAX_TOKEN_LENGTH characters (a very long URL) verifies."""
    tok, url = _token_of_length(MAX_TOKEN_LENGTH)
    assert len(tok) == MAX_TOKEN_LENGTH
    assert check(tok, url=url)["sub"] == url


def test_tokens_over_the_length_limit_are_refused_before_decoding() -> None:
    """One character more, and the token is refused by its length alone."""
    tok, url = _token_of_length(MAX_TOKEN_LENGTH + 1)
    assert len(tok) == MAX_TOKEN_LENGTH + 1
    with pytest.raises(MalformedSignature, match=f"longer than {MAX_TOKEN_LENGTH} characters"):
        check(tok, url=url)
    with pytest.raises(MalformedSignature, match="longer than"):
        check("." * (MAX_TOKEN_LENGTH + 1))


# --- JSON: objects only; deep nesting is malformed, not a crash ------------------------------

DEEP = b"[" * 20_000 + b"]" * 20_000


@pytest.mark.parametrize(
    "header",
    [DEEP, b'{"alg": ' + DEEP + b"}", b"[]", b'"HS256"', b"null", b"1", b"{", b"\xff", b""],
    ids=["deep", "deep alg", "list", "string", "null", "number", "cut", "not utf-8", "empty"],
)
def test_an_unsigned_hostile_header_is_malformed(header: bytes) -> None:
    """A header that is no JSON object (deeply nested ones included) is malformed, no crash."""
    with pytest.raises(MalformedSignature, match="the header is not (JSON|a JSON object)"):
        check(forge_raw(header, json.dumps(claims()).encode(), None))


@pytest.mark.parametrize(
    "payload",
    [DEEP, b'{"iss": "Upstash", "x": ' + DEEP + b"}", b"[]", b'"x"', b"null", b"{", b"\xff"],
    ids=["deep", "deep claim", "list", "string", "null", "cut", "not utf-8"],
)
def test_a_signed_hostile_payload_is_malformed(payload: bytes) -> None:
    """A correctly signed payload that is no JSON object is malformed, no crash."""
    with pytest.raises(MalformedSignature, match="the payload is not (JSON|a JSON object)"):
        check(forge_raw(json.dumps(HS256).encode(), payload, CURRENT_KEY))


@pytest.mark.parametrize(
    "payload", [DEEP, b"[]", b"{", b"\xff"], ids=["deep", "list", "cut", "bin"]
)
def test_the_payload_is_not_parsed_before_the_signature_matches(payload: bytes) -> None:
    """Without the key, a hostile payload is just a signature mismatch: it is never parsed."""
    with pytest.raises(InvalidSignature, match="matches neither"):
        check(forge_raw(json.dumps(HS256).encode(), payload, "sig_attacker_key"))


def test_duplicate_claims_take_the_last_value() -> None:
    """A claim spelled twice counts as its last value, as in PyJWT and JSON.parse."""
    header = json.dumps(HS256).encode()
    text = json.dumps(claims())[:-1]
    assert (
        check(forge_raw(header, f'{text}, "exp": {NOW + 60}}}'.encode(), CURRENT_KEY))["exp"]
        == NOW + 60
    )
    with pytest.raises(SignatureExpired):
        check(forge_raw(header, f'{text}, "exp": {NOW - 60}}}'.encode(), CURRENT_KEY))


# --- header: HS256 only, no critical extensions ----------------------------------------------


@pytest.mark.parametrize(
    ("header", "shown"),
    [
        ({"alg": "none"}, "'none'"),
        ({"alg": "HS512", "typ": "JWT"}, "'HS512'"),
        ({"alg": "hs256"}, "'hs256'"),
        ({"alg": ["HS256"]}, "<list>"),
        ({"alg": None}, "<NoneType>"),
        ({"typ": "JWT"}, "<NoneType>"),
        ({"alg": "HS256" * 1000}, "<str>"),
    ],
)
def test_only_hs256_is_allowed_and_the_alg_is_shown_short(
    header: dict[str, Any], shown: str
) -> None:
    """Any alg but HS256 is refused; the message quotes it only when it is a short string."""
    with pytest.raises(AlgorithmNotAllowed) as info:
        check(token(header=header))
    assert str(info.value) == f"algorithm {shown} is not allowed, only HS256"


@pytest.mark.parametrize(("length", "quoted"), [(40, True), (41, False)])
def test_an_alg_is_quoted_up_to_40_characters(length: int, quoted: bool) -> None:
    """An alg string is quoted in the message up to 40 characters, else only its type."""
    alg = "X" * length
    with pytest.raises(AlgorithmNotAllowed) as info:
        check(token(header={"alg": alg}))
    assert (repr(alg) in str(info.value)) is quoted
    assert ("<str>" in str(info.value)) is not quoted


@pytest.mark.parametrize("crit", [["b64"], ["exp"], [], "b64", None])
def test_critical_header_extensions_are_refused(crit: Any) -> None:
    """A header naming 'crit' extensions is refused (RFC 7515: we understand none)."""
    tok = token(header={**HS256, "crit": crit, "b64": False})
    with pytest.raises(MalformedSignature) as info:
        check(tok)
    assert str(info.value) == "the header names critical extensions ('crit'); none is known"


def test_unknown_header_fields_are_ignored() -> None:
    """Other header fields (kid, cty, x5u…) change nothing once alg is HS256."""
    tok = token(header={**HS256, "kid": "k1", "cty": "x", "x5u": "http://evil.example/"})
    assert check(tok)["sub"] == URL


# --- keys: current then next; empty ones skipped ---------------------------------------------


@pytest.mark.parametrize("missing", [None, ""])
def test_an_unset_key_is_skipped(missing: str | None) -> None:
    """An unset current key does not stop the next key from verifying."""
    assert check(token(key=NEXT_KEY), keys=(missing, NEXT_KEY))["sub"] == URL
    assert check(token(key=CURRENT_KEY), keys=(CURRENT_KEY, missing))["sub"] == URL


def test_a_token_signed_with_an_empty_key_never_verifies() -> None:
    """An unset key is not the empty key: HMAC under '' is a mismatch, not a pass."""
    with pytest.raises(InvalidSignature) as info:
        check(token(key=""), keys=("", NEXT_KEY))
    assert str(info.value) == "the signature matches neither the current nor the next signing key"


@pytest.mark.parametrize("keys", [(), (None, None), ("", ""), (None, "")])
def test_no_configured_key_is_said_so(keys: tuple[str | None, ...]) -> None:
    """With no key at all, the error says no key is configured, not 'mismatch'."""
    with pytest.raises(InvalidSignature, match="^no signing key is configured$"):
        check(GOOD, keys=keys)


def test_a_key_string_is_not_a_list_of_keys() -> None:
    """keys='sig_…' (one string) is a TypeError, never a list of one-letter keys."""
    one_letter = token(key=CURRENT_KEY[0])
    with pytest.raises(TypeError) as info:
        check(one_letter, keys=CURRENT_KEY)
    assert str(info.value) == (
        "keys must be a sequence of signing keys (current, next), not a string"
    )


def test_any_iterable_of_keys_works() -> None:
    """keys may be a generator: the current key, then the next."""
    assert check(token(key=NEXT_KEY), keys=(k for k in KEYS))["sub"] == URL


def test_the_next_key_reports_the_real_reason() -> None:
    """A token signed with the next key and expired says expired, not mismatch."""
    with pytest.raises(SignatureExpired):
        check(token(key=NEXT_KEY, exp=NOW - 600, iat=NOW - 900))


# --- claims ----------------------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["iss", "sub", "exp", "nbf", "body"])
def test_each_required_claim_is_named_when_missing(claim: str) -> None:
    """A missing required claim is named in the error."""
    with pytest.raises(MissingClaim, match=f"the token has no '{claim}' claim"):
        check(forge(HS256, claims(**{claim: None}), CURRENT_KEY))


@pytest.mark.parametrize("value", [["Upstash"], {"name": "Upstash"}, 1, "upstash", "Upstash "])
def test_the_issuer_must_be_upstash(value: Any) -> None:
    """iss must be exactly the string 'Upstash'."""
    with pytest.raises(WrongIssuer, match="the issuer is not 'Upstash'"):
        check(token(iss=value))


@pytest.mark.parametrize("claim", ["sub", "body", "jti"])
@pytest.mark.parametrize("value", [[URL], {"url": URL}, 1, 1.5, True, {}])
def test_string_claims_must_be_strings(claim: str, value: Any) -> None:
    """sub, body and jti of another JSON type are malformed (never compared, never shown)."""
    with pytest.raises(MalformedSignature, match=f"the '{claim}' claim is not a string"):
        check(token(**{claim: value}))


def test_jti_is_optional() -> None:
    """A token without jti verifies."""
    assert "jti" not in check(token(jti=None))


@pytest.mark.parametrize("audience", [URL, [URL], "", [], None, 0, False])
def test_an_audience_claim_is_refused(audience: Any) -> None:
    """Any aud claim is refused: QStash sends none, and RFC 7519 says refuse one not ours."""
    tok = forge(HS256, {**claims(), "aud": audience}, CURRENT_KEY)
    with pytest.raises(MalformedSignature) as info:
        check(tok)
    assert str(info.value) == "the token names an audience ('aud'); QStash's never do"


def test_the_subject_mismatch_names_both_urls() -> None:
    """A token for another URL names it and ours."""
    with pytest.raises(SubjectMismatch) as info:
        check(token(sub=URL + "/"))
    assert info.value.actual == URL + "/" and info.value.expected == URL


@pytest.mark.parametrize(
    "claimed",
    [
        body_hash(BODY) + "X",
        "X" + body_hash(BODY),
        body_hash(BODY)[:-1],
        body_hash(b""),
        body_hash(BODY).upper(),
        "\ud800" + body_hash(BODY),
        body_hash(BODY) + "\u00e9",
        "",
        "=",
    ],
    ids=[
        "trailing X",
        "leading X",
        "cut",
        "other",
        "upper",
        "surrogate",
        "e-acute",
        "empty",
        "pad",
    ],
)
def test_only_the_exact_body_digest_matches(claimed: str) -> None:
    """Any body claim but the digest (with optional trailing '=') is a body mismatch."""
    with pytest.raises(BodyHashMismatch) as info:
        check(token(body=claimed))
    assert str(info.value) == "the body's SHA-256 does not match the token's 'body' claim"


@pytest.mark.parametrize("padding", ["", "=", "==", "====="])
def test_trailing_padding_on_the_body_claim_is_ignored(padding: str) -> None:
    """Trailing '=' on the body claim is ignored, as both official SDKs strip them."""
    assert check(token(body=body_hash(BODY) + padding))["sub"] == URL


def test_verify_returns_every_claim() -> None:
    """The claims come back as signed, extra ones included."""
    extra = claims(custom={"a": [1, 2]})
    assert check(forge(HS256, extra, CURRENT_KEY)) == extra


def test_sign_and_verify_round_trip_at_a_given_time() -> None:
    """sign(now=…) makes a token verify exactly until now + 300 (+ tolerance)."""
    tok = sign(BODY, url=URL, key=CURRENT_KEY, now=NOW)
    assert check(tok, now=NOW + 300 + TOLERANCE - 1)["exp"] == NOW + 300
    with pytest.raises(SignatureExpired):
        check(tok, now=NOW + 300 + TOLERANCE)


# --- the cached header -----------------------------------------------------------------------


class _CountingJson:
    """Stands in for the json module inside signature.py, counting documents parsed."""

    def __init__(self) -> None:
        self.parsed = 0

    def loads(self, data: bytes) -> Any:
        self.parsed += 1
        return json.loads(data)


@pytest.fixture
def counting_json(monkeypatch: pytest.MonkeyPatch) -> Iterator[_CountingJson]:
    counter = _CountingJson()
    monkeypatch.setattr(signature, "json", counter)
    yield counter


def test_a_verified_header_is_decoded_once(counting_json: _CountingJson) -> None:
    """After one verified token, the same header costs no JSON decoding: only the payload."""
    header = {**HS256, "kid": "cache-test"}
    check(token(header=header))
    counting_json.parsed = 0
    check(token(header=header, jti="jwt_second"))
    assert counting_json.parsed == 1


def test_unauthenticated_headers_never_evict_the_verified_one(
    counting_json: _CountingJson,
) -> None:
    """A caller spraying distinct headers without the key cannot slow verified tokens down."""
    header = {**HS256, "kid": "spray-test"}
    check(token(header=header))
    for n in range(64):
        with pytest.raises(InvalidSignature):
            check(token(key="sig_attacker_key", header={**HS256, "kid": f"spray-{n}"}))
    counting_json.parsed = 0
    check(token(header=header))
    assert counting_json.parsed == 1


def test_unauthenticated_headers_never_fill_the_cache(counting_json: _CountingJson) -> None:
    """After a spray of headers without the key, a new verified header is still cached."""
    for n in range(64):
        with pytest.raises(InvalidSignature):
            check(token(key="sig_attacker_key", header={**HS256, "kid": f"fill-{n}"}))
    header = {**HS256, "kid": "after-the-spray"}
    check(token(header=header))
    counting_json.parsed = 0
    check(token(header=header))
    assert counting_json.parsed == 1


def test_the_cached_header_is_used_for_that_segment_only() -> None:
    """Once HS256 is cached, a token with another header (alg none) is still refused."""
    check(GOOD)
    none_header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    with pytest.raises(AlgorithmNotAllowed, match="'none'"):
        check(f"{none_header}.{PAYLOAD}.{SIGNATURE}")
    with pytest.raises(AlgorithmNotAllowed):
        check(f"{none_header}.{PAYLOAD}.")
