"""Sign and verify ``Upstash-Signature`` tokens: pure functions over bytes.

QStash signs each delivery with a JWT (HS256, the signing key string as the HMAC secret)
whose claims bind it to one destination URL (``sub``) and one body (``body`` =
base64url(SHA-256(raw body))). Unlike the official Python SDK, ``verify`` tells *why* a
token failed: the current key is tried first, and only a signature mismatch falls through
to the next key, so a token that is expired under the current key says "expired".

No I/O, no Flask: the receiver (``receiver.py``) and the dev server both build on this.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Iterable
from typing import Any

import jwt

from app.errors import (
    AlgorithmNotAllowed,
    BodyHashMismatch,
    InvalidSignature,
    MalformedSignature,
    MissingClaim,
    SignatureExpired,
    SignatureNotYetValid,
    SubjectMismatch,
    WrongIssuer,
)

ISSUER = "Upstash"
ALGORITHM = "HS256"
#: QStash's tokens live five minutes.
TOKEN_TTL = 300
#: Claims every QStash token carries and ``verify`` insists on.
REQUIRED_CLAIMS = ("iss", "sub", "exp", "nbf", "body")

# PyJWT checks the signature before any claim, so a claim error raised while decoding
# with one key proves the token was signed with that key.
_DECODE_OPTIONS: Any = {
    "require": list(REQUIRED_CLAIMS),
    "verify_aud": False,
    "verify_jti": False,
    "verify_sub": False,  # compared below, with both URLs in the message
}


def body_hash(body: bytes) -> str:
    """Return base64url(SHA-256(body)) without padding, as QStash's ``body`` claim."""
    digest = hashlib.sha256(body).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign(
    body: bytes,
    *,
    url: str,
    key: str,
    now: int | None = None,
    ttl: int = TOKEN_TTL,
    not_before: int = 0,
    jti: str | None = None,
) -> str:
    """Return an ``Upstash-Signature`` token for delivering ``body`` to ``url``.

    The claims are QStash's own: ``iss``, ``sub``, ``exp`` (= ``iat`` + 300 s), ``iat``,
    ``nbf`` (0, as QStash sends since September 2024), ``jti`` and ``body`` (padded, as in
    QStash's documented example).
    """
    issued_at = int(time.time()) if now is None else now
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode("ascii")
    claims = {
        "iss": ISSUER,
        "sub": url,
        "exp": issued_at + ttl,
        "nbf": not_before,
        "iat": issued_at,
        "jti": jti or f"jwt_{uuid.uuid4().hex}",
        "body": digest,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"typ": "JWT"})


def verify(
    token: str,
    body: bytes,
    *,
    url: str,
    keys: Iterable[str | None],
    tolerance: float = 0,
) -> dict[str, Any]:
    """Verify ``token`` for ``body`` delivered to ``url`` and return its claims.

    ``keys`` are tried in order (current, then next); empty ones are skipped. Raises a
    subclass of ``SignatureError`` naming the first real reason the token is not valid.
    """
    _check_header(token)
    claims = _decode_with_any_key(token, [k for k in keys if k], tolerance)
    subject = claims["sub"]
    if subject != url:
        raise SubjectMismatch(expected=url, actual=subject)
    claimed = claims["body"]
    if not isinstance(claimed, str):
        raise MalformedSignature("the 'body' claim is not a string")
    expected = body_hash(body).encode("ascii")
    if not hmac.compare_digest(claimed.rstrip("=").encode("utf-8", "surrogatepass"), expected):
        raise BodyHashMismatch("the body's SHA-256 does not match the token's 'body' claim")
    return claims


def _check_header(token: str) -> None:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise MalformedSignature(f"not a JWT: {exc}") from None
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise AlgorithmNotAllowed(f"algorithm {alg!r} is not allowed, only {ALGORITHM}")


def _decode_with_any_key(token: str, keys: list[str], tolerance: float) -> dict[str, Any]:
    if not keys:
        raise InvalidSignature("no signing key is configured")
    for key in keys:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                leeway=tolerance,
                options=_DECODE_OPTIONS,
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise _translate(exc) from None
        return claims
    raise InvalidSignature("the signature matches neither the current nor the next signing key")


def _translate(exc: jwt.PyJWTError) -> Exception:
    # Order matters: several of PyJWT's errors subclass one another.
    if isinstance(exc, jwt.ExpiredSignatureError):
        return SignatureExpired("the token has expired (exp is in the past)")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return SignatureNotYetValid(f"the token is not valid yet: {exc}")
    if isinstance(exc, jwt.InvalidIssuerError):
        return WrongIssuer(f"the issuer is not {ISSUER!r}")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return MissingClaim(f"the token has no {exc.claim!r} claim")
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return AlgorithmNotAllowed(str(exc))
    return MalformedSignature(f"malformed token: {exc}")
