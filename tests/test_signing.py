"""sign() makes, byte for byte, the token PyJWT's encode() makes for the same claims.

sign() builds the JWT with the standard library (the dev server signs every delivery, and
PyJWT's encode was a tenth of the dev server's CPU per delivery); PyJWT is the oracle.
"""

from __future__ import annotations

import jwt
from hypothesis import given
from hypothesis import strategies as st

from app.qstash.signature import body_hash, sign, verify
from tests.conftest import CURRENT_KEY, NEXT_KEY


def pyjwt_token(body: bytes, url: str, key: str, now: int, not_before: int, jti: str) -> str:
    """Return PyJWT's token for the claims QStash sends."""
    digest = body_hash(body) + "=" * (-len(body_hash(body)) % 4)
    claims = {
        "iss": "Upstash",
        "sub": url,
        "exp": now + 300,
        "nbf": not_before,
        "iat": now,
        "jti": jti,
        "body": digest,
    }
    return jwt.encode(claims, key, algorithm="HS256")


@given(
    body=st.binary(max_size=200),
    url=st.text(max_size=80),
    key=st.sampled_from([CURRENT_KEY, NEXT_KEY, "ключ-é" * 8]),
    now=st.integers(0, 2**40),
    not_before=st.integers(0, 2**40),
    jti=st.text(max_size=40),
)
def test_sign_makes_pyjwts_token(
    body: bytes, url: str, key: str, now: int, not_before: int, jti: str
) -> None:
    token = sign(body, url=url, key=key, now=now, not_before=not_before, jti=jti or None)
    if jti:
        assert token == pyjwt_token(body, url, key, now, not_before, jti)
    dates = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}
    claims = jwt.decode(token, key, algorithms=["HS256"], options=dates)
    assert claims["sub"] == url and claims["iat"] == now


def test_a_fresh_token_verifies_and_has_a_random_jti() -> None:
    url = "http://127.0.0.1:5000/api/jobs/noop"
    first, second = sign(b"{}", url=url, key=CURRENT_KEY), sign(b"{}", url=url, key=CURRENT_KEY)
    assert verify(first, b"{}", url=url, keys=(CURRENT_KEY, NEXT_KEY))["sub"] == url
    jtis = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in (first, second)}
    assert len(jtis) == 2 and all(j.startswith("jwt_") and len(j) == 36 for j in jtis)
