"""sign()/verify(): QStash's token format, the official SDK as an oracle, and properties."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
import qstash
import qstash.errors
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app
from app.errors import (
    BodyHashMismatch,
    InvalidSignature,
    SignatureError,
    SignatureExpired,
    SubjectMismatch,
)
from app.qstash.signature import body_hash, sign, verify
from tests.conftest import APP_URL, CURRENT_KEY, NEXT_KEY, TEST_CONFIG, Calls, make_registry
from tests.tokens import forge

URL = APP_URL + "/api/jobs/noop"
KEYS = (CURRENT_KEY, NEXT_KEY)
THIRD_KEY = "sig_third_0123456789abcdefghijklm"


def test_sign_produces_qstash_claims() -> None:
    """A signed token carries every claim QStash sends, exp = iat + 300 and nbf 0."""
    token = sign(b"{}", url=URL, key=CURRENT_KEY, now=1_700_000_000)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert claims["iss"] == "Upstash" and claims["sub"] == URL
    assert (claims["iat"], claims["exp"], claims["nbf"]) == (1_700_000_000, 1_700_000_300, 0)
    assert claims["jti"].startswith("jwt_")
    assert claims["body"].rstrip("=") == body_hash(b"{}")
    assert claims["body"].endswith("=")  # padded, as in QStash's documented example


def test_each_token_has_a_unique_jti() -> None:
    """Two tokens for the same body differ by jti."""
    first, second = (
        jwt.decode(sign(b"x", url=URL, key=CURRENT_KEY), options={"verify_signature": False})
        for _ in range(2)
    )
    assert first["jti"] != second["jti"]


def test_expired_under_current_key_says_expired() -> None:
    """An expired token signed with the current key reports expiry, not a key mismatch."""
    token = sign(b"{}", url=URL, key=CURRENT_KEY, now=int(time.time()) - 400)
    with pytest.raises(SignatureExpired):
        verify(token, b"{}", url=URL, keys=KEYS)


def test_subject_mismatch_shows_both_urls() -> None:
    """A subject mismatch names the token's URL and the endpoint's."""
    token = sign(b"{}", url="http://localhost:3000/api/jobs/noop", key=CURRENT_KEY)
    with pytest.raises(SubjectMismatch) as info:
        verify(token, b"{}", url=URL, keys=KEYS)
    assert "http://localhost:3000/api/jobs/noop" in str(info.value) and URL in str(info.value)


def test_no_keys_verifies_nothing() -> None:
    """With no key configured nothing verifies."""
    with pytest.raises(InvalidSignature):
        verify(sign(b"", url=URL, key=CURRENT_KEY), b"", url=URL, keys=(None, ""))


def official(signature: str, body: bytes, url: str) -> bool:
    """Return whether the official SDK's Receiver accepts the token."""
    receiver = qstash.Receiver(current_signing_key=CURRENT_KEY, next_signing_key=NEXT_KEY)
    try:
        receiver.verify(signature=signature, body=body.decode(), url=url)
    except qstash.errors.SignatureError:
        return False
    return True


def ours(signature: str, body: bytes, url: str = URL) -> bool:
    """Return whether our verify() accepts the token."""
    try:
        verify(signature, body, url=url, keys=KEYS, tolerance=0)
    except SignatureError:
        return False
    return True


ORACLE_CASES: dict[str, tuple[str, bytes, str, bool]] = {
    "current key": (sign(b'{"a":1}', url=URL, key=CURRENT_KEY), b'{"a":1}', URL, True),
    "next key": (sign(b'{"a":1}', url=URL, key=NEXT_KEY), b'{"a":1}', URL, True),
    "unicode body": (sign("é✓".encode(), url=URL, key=CURRENT_KEY), "é✓".encode(), URL, True),
    "empty body": (sign(b"", url=URL, key=CURRENT_KEY), b"", URL, True),
    "tampered body": (sign(b'{"a":1}', url=URL, key=CURRENT_KEY), b'{"a":2}', URL, False),
    "other url": (sign(b"{}", url=URL, key=CURRENT_KEY), b"{}", URL + "x", False),
    "third key": (sign(b"{}", url=URL, key=THIRD_KEY), b"{}", URL, False),
    "expired": (
        sign(b"{}", url=URL, key=CURRENT_KEY, now=int(time.time()) - 600),
        b"{}",
        URL,
        False,
    ),
    "not yet valid": (
        sign(b"{}", url=URL, key=CURRENT_KEY, not_before=int(time.time()) + 600),
        b"{}",
        URL,
        False,
    ),
}


@pytest.mark.parametrize("name", list(ORACLE_CASES))
def test_official_receiver_agrees(name: str) -> None:
    """The official qstash Receiver and our verify() agree on tokens sign() makes."""
    token, body, url, expected = ORACLE_CASES[name]
    assert official(token, body, url) is expected
    assert ours(token, body, url) is expected


@given(body=st.binary(max_size=512), other=st.binary(max_size=512))
def test_only_the_signed_body_verifies(body: bytes, other: bytes) -> None:
    """A token verifies for exactly the body it was signed for."""
    token = sign(body, url=URL, key=CURRENT_KEY)
    assert verify(token, body, url=URL, keys=KEYS)["sub"] == URL
    if other != body:
        with pytest.raises(BodyHashMismatch):
            verify(token, other, url=URL, keys=KEYS)


@given(token=st.text(max_size=300), body=st.binary(max_size=256))
def test_random_tokens_raise_only_signature_errors(token: str, body: bytes) -> None:
    """Arbitrary strings never verify and never raise anything but SignatureError."""
    with pytest.raises(SignatureError):
        verify(token, body, url=URL, keys=KEYS)


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=20),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
)


@given(
    header=st.dictionaries(st.sampled_from(["typ", "kid", "crit", "cty", "jku"]), JUNK),
    claims=st.dictionaries(
        st.sampled_from(["iss", "sub", "exp", "nbf", "iat", "body", "jti", "aud"]), JUNK
    ),
    body=st.binary(max_size=64),
)
def test_signed_junk_claims_never_verify_unless_complete(
    header: dict[str, Any], claims: dict[str, Any], body: bytes
) -> None:
    """Tokens with arbitrary headers and claims under the right key raise only SignatureError."""
    token = forge({**header, "alg": "HS256"}, claims, CURRENT_KEY)
    try:
        result = verify(token, body, url=URL, keys=KEYS)
    except SignatureError:
        return
    assert result["iss"] == "Upstash" and result["sub"] == URL
    assert result["body"].rstrip("=") == body_hash(body)


def pyjwt_accepts(token: str, body: bytes) -> bool:
    """Return whether PyJWT's decode (plus the sub and body checks) accepts the token."""
    for key in KEYS:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["HS256"],
                issuer="Upstash",
                options={"require": ["iss", "sub", "exp", "nbf", "body"], "verify_sub": False},
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError:
            return False
        return claims["sub"] == URL and str(claims["body"]).rstrip("=") == body_hash(body)
    return False


NOW = int(time.time())


@settings(max_examples=300)
@given(
    alg=st.sampled_from(["HS256", "HS256", "HS256", "HS512", "none"]),
    key=st.sampled_from([CURRENT_KEY, NEXT_KEY, THIRD_KEY]),
    claims=st.fixed_dictionaries(
        {},
        optional={
            "iss": st.sampled_from(["Upstash", "upstash", "Upstash "]),
            "sub": st.sampled_from([URL, URL + "/", URL.upper()]),
            "exp": st.integers(NOW - 400, NOW + 400),
            "nbf": st.one_of(st.just(0), st.integers(NOW - 100, NOW + 100)),
            "iat": st.integers(NOW - 400, NOW + 100),
            "body": st.sampled_from([body_hash(b"{}"), body_hash(b"{}") + "=", "x"]),
        },
    ),
)
def test_verify_agrees_with_pyjwt(alg: str, key: str, claims: dict[str, Any]) -> None:
    """Our standard-library verifier accepts exactly the tokens PyJWT's decode accepts."""
    token = forge({"alg": alg, "typ": "JWT"}, claims, key)
    assert ours(token, b"{}") is pyjwt_accepts(token, b"{}")


_APP: Flask = create_app(TEST_CONFIG, registry=make_registry(_CALLS := Calls()))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=2048),
    header=st.one_of(st.none(), st.text(max_size=400)),
    job=st.sampled_from(["noop", "resize", "crash"]),
)
def test_endpoint_never_runs_handler_or_errors_on_random_input(
    body: bytes, header: str | None, job: str
) -> None:
    """Random bodies and tokens get 401, never a 500, and never reach the handler."""
    headers = {}
    if header is not None:
        raw = header.encode("utf-8", "ignore").decode("latin-1")
        headers["Upstash-Signature"] = raw.replace("\r", "").replace("\n", "")
    before = len(_CALLS)
    response = _APP.test_client().post(f"/api/jobs/{job}", data=body, headers=headers)
    assert response.status_code == 401
    assert len(_CALLS) == before
