"""Sign and verify ``Upstash-Signature`` tokens: pure functions over bytes.

QStash signs each delivery with a JWT (HS256, the signing key string as the HMAC secret)
whose claims bind it to one destination URL (``sub``) and one body (``body`` =
base64url(SHA-256(raw body))). Unlike the official Python SDK, ``verify`` tells *why* a
token failed: the current key is tried first, and only a signature mismatch falls through
to the next key, so a token that is expired under the current key says "expired".

Both directions are a few lines of standard library, for speed: the dev server signs
every delivery, the receiver verifies every one; tests hold both to PyJWT and the official
SDK. No I/O, no Flask: the receiver (``receiver.py``) and the dev server build on this.

What ``verify`` accepts, next to the official verifiers (``qstash`` on PyPI, which runs
PyJWT's ``decode``; ``@upstash/qstash``, which runs jose's ``jwtVerify``):

- Same: ``alg`` HS256 only; the current key, then the next; ``iss == "Upstash"``;
  ``sub`` equal to the URL; ``body`` equal to base64url(SHA-256(raw body)) with trailing
  ``=`` ignored on both sides; ``nbf``/``iat`` > now + tolerance is "not yet valid",
  ``exp`` <= now - tolerance is "expired" (exactly at the bound is still valid); a
  duplicate JSON key: the last one wins (``json.loads``, PyJWT and ``JSON.parse`` alike).
- Stricter, on purpose:
  * ``exp``, ``nbf`` and ``iat`` must be JSON numbers within a double's range
    (|n| <= 1.797...e308): never a string (PyJWT takes ``"123"``), a boolean (PyJWT reads
    ``true`` as 1), ``NaN``/``Infinity`` (a JSON extension ``json.loads`` accepts; PyJWT
    refuses them too) or a number beyond that range (``1e999``, or an integer literal too
    long for a double, which PyJWT accepts and jose reads as Infinity: a token that never
    expires). Fractions are compared exactly, where PyJWT truncates toward zero.
  * Each segment must be the canonical base64url spelling of its bytes, without padding
    (RFC 7515): no ``=`` (PyJWT and jose accept the standard padding; QStash never sends
    it), no ``+``/``/``, no set unused bits in the last character (PyJWT 2.15 refuses
    those too). So a token has one spelling: it cannot be re-spelled into another string
    that still verifies.
  * ``sub``, ``body`` and ``jti`` must be strings (as PyJWT checks ``sub``/``jti``),
    ``aud`` must be absent (RFC 7519: an audience we are not in means refusal; PyJWT
    refuses only a non-empty one, jose none), and a header listing ``crit`` extensions is
    refused (RFC 7515: we understand none; PyJWT knows only ``b64``).
  * ``iat`` in the future is "not yet valid", as in PyJWT (jose checks it only with
    ``maxTokenAge``). The clock tolerance applies to ``iat``, ``nbf`` and ``exp`` alike
    (the Python SDK's ``clock_tolerance`` never reaches PyJWT), and must be finite and
    >= 0: a NaN tolerance would make every comparison false, so nothing would expire.
  * A token longer than ``MAX_TOKEN_LENGTH`` is refused before any decoding, and the
    payload's JSON is parsed only after the HMAC matched: whoever lacks the key can make
    us parse one JSON header of bounded size, nothing more.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import math
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

from app.qstash.errors import (
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
#: Longest token ``verify`` decodes. QStash's are ~400 characters plus the URL; HTTP servers
#: cap a header line near 8 KiB (gunicorn, nginx), so this only binds callers without one.
MAX_TOKEN_LENGTH = 64 * 1024
# Largest magnitude of a date claim: a double's (what every JSON verifier reads numbers as).
_LARGEST_DATE = sys.float_info.max


def body_hash(body: bytes) -> str:
    """Return base64url(SHA-256(body)) without padding, as QStash's ``body`` claim."""
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()


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
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode()
    claims = {
        "iss": ISSUER,
        "sub": url,
        "exp": issued_at + ttl,
        "nbf": not_before,
        "iat": issued_at,
        "jti": jti or f"jwt_{os.urandom(16).hex()}",
        "body": digest,
    }
    # The bytes PyJWT's encode() makes for these claims (tests/test_signing.py holds them
    # equal), at a tenth of its CPU: the dev server signs every delivery.
    payload = _b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{_SIGNED_HEADER}.{payload}"
    mac = _keyed_mac(key).copy()
    mac.update(signing_input.encode())
    return f"{signing_input}.{_b64url_encode(mac.digest())}"


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


#: The header segment of every token ``sign`` makes: ``{"alg":"HS256","typ":"JWT"}``.
_SIGNED_HEADER = _b64url_encode(b'{"alg":"HS256","typ":"JWT"}')


def verify(
    token: str,
    body: bytes,
    *,
    url: str,
    keys: Iterable[str | None],
    tolerance: float = 0,
    now: float | None = None,
) -> dict[str, Any]:
    """Verify ``token`` for ``body`` delivered to ``url`` and return its claims.

    ``keys`` are tried in order (current, then next); empty ones are skipped. Raises a
    subclass of ``SignatureError`` naming the first real reason the token is not valid,
    and ``TypeError``/``ValueError`` for arguments no token can be checked against.
    """
    if isinstance(keys, str):
        raise TypeError("keys must be a sequence of signing keys (current, next), not a string")
    if not 0 <= tolerance < math.inf:
        raise ValueError(f"tolerance must be a finite number of seconds >= 0, not {tolerance!r}")
    moment = time.time() if now is None else now
    if not math.isfinite(moment):
        raise ValueError(f"now must be a finite unix time, not {moment!r}")
    if len(token) > MAX_TOKEN_LENGTH:
        raise MalformedSignature(f"the token is longer than {MAX_TOKEN_LENGTH} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedSignature("not a JWT: a token has three dot-separated parts")
    header = _header(parts[0])
    if header.get("alg") != ALGORITHM:
        raise AlgorithmNotAllowed(
            f"algorithm {_quoted(header.get('alg'))} is not allowed, only {ALGORITHM}"
        )
    if "crit" in header:
        raise MalformedSignature("the header names critical extensions ('crit'); none is known")
    payload = _b64url_decode(parts[1], "payload")
    signature = _b64url_decode(parts[2], "signature")
    if not _signed_with_any(keys, f"{parts[0]}.{parts[1]}".encode(), signature):
        raise InvalidSignature("the signature matches neither the current nor the next signing key")
    _remember_header(parts[0], header)
    claims = _json_object(payload, "payload")
    _check_claims(claims, moment, tolerance)
    if claims["sub"] != url:
        raise SubjectMismatch(expected=url, actual=claims["sub"])
    claimed = claims["body"]
    # The digest is ASCII, so a claim that is not cannot match (and compare_digest on str
    # takes ASCII only).
    if not (claimed.isascii() and hmac.compare_digest(claimed.rstrip("="), body_hash(body))):
        raise BodyHashMismatch("the body's SHA-256 does not match the token's 'body' claim")
    return claims


# Verification is done here with the standard library rather than jwt.decode(): PyJWT
# 2.15 validates base64url one character at a time in Python, ~90 µs per token on the
# reference machine, which alone cost a guarded endpoint 40 % of its throughput under
# gunicorn. The HMAC covers the raw header and payload text, and tests check this
# verifier against PyJWT's decode and the official SDK on generated tokens.


def _header(segment: str) -> dict[str, Any]:
    known_segment, known = _verified_header
    if segment == known_segment:
        return known
    return _json_object(_b64url_decode(segment, "header"), "header")


# The header segment of the last token whose HMAC matched, decoded. QStash's never changes,
# so this skips its base64 and JSON on every delivery (2.6 of 14.5 µs per verify on the
# reference machine). Only a verified token replaces it, so a caller without the key can
# neither evict it nor make it hold anything. "." is in no segment: the start matches none.
_verified_header: tuple[str, dict[str, Any]] = (".", {})


def _remember_header(segment: str, header: dict[str, Any]) -> None:
    global _verified_header
    _verified_header = (segment, header)


def _b64url_decode(segment: str, part: str) -> bytes:
    try:
        spelled = segment.encode()
        # Lenient decoding (junk skipped, "==" is as much padding as any length needs)...
        decoded = binascii.a2b_base64(spelled.translate(_SWAP) + b"==")
    except (UnicodeEncodeError, binascii.Error):
        raise MalformedSignature(f"not a JWT: the {part} is not base64url") from None
    # ...then the one rule that matters: the segment must be exactly the unpadded encoding
    # of those bytes. Stray characters (non-ASCII too), any '=' and set unused bits all fail
    # it, so every token has one spelling.
    canonical = binascii.b2a_base64(decoded, newline=False).translate(_SWAP).rstrip(b"=")
    if spelled != canonical:
        raise MalformedSignature(f"not a JWT: the {part} is not canonical base64url")
    return decoded


# base64url <-> standard base64, both ways: '-' and '_' trade places with '+' and '/', so a
# '+' or '/' in a token decodes as junk and fails the canonical spelling check.
_SWAP = bytes.maketrans(b"-_+/", b"+/-_")


def _json_object(data: bytes, part: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise MalformedSignature(f"not a JWT: the {part} is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedSignature(f"not a JWT: the {part} is not a JSON object")
    return value


def _quoted(value: object) -> str:
    # Unauthenticated values go into messages (and logs) short, never as a huge repr.
    if isinstance(value, str) and len(value) <= 40:
        return repr(value)
    return f"<{type(value).__name__}>"


@functools.lru_cache(maxsize=8)
def _keyed_mac(key: str) -> hmac.HMAC:
    # HMAC's key schedule is computed once per key; each token then costs one copy().
    return hmac.new(key.encode(), digestmod=hashlib.sha256)


def _signed_with_any(keys: Iterable[str | None], signing_input: bytes, signature: bytes) -> bool:
    configured = [key for key in keys if key]
    if not configured:
        raise InvalidSignature("no signing key is configured")
    for key in configured:
        mac = _keyed_mac(key).copy()
        mac.update(signing_input)
        if hmac.compare_digest(mac.digest(), signature):
            return True
    return False


def _date(claims: dict[str, Any], name: str) -> float:
    value = claims[name]
    # NaN fails both comparisons; integers beyond a double are refused exactly.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedSignature(f"the {name!r} claim must be a number, not {_quoted(value)}")
    if not -_LARGEST_DATE <= value <= _LARGEST_DATE:
        raise MalformedSignature(f"the {name!r} claim must be a finite number, not {value!r:.40}")
    return value


def _check_claims(claims: dict[str, Any], now: float, tolerance: float) -> None:
    for name in REQUIRED_CLAIMS:
        if name not in claims:
            raise MissingClaim(f"the token has no {name!r} claim")
    if "iat" in claims and _date(claims, "iat") > now + tolerance:
        raise SignatureNotYetValid("the token is not valid yet (iat is in the future)")
    if _date(claims, "nbf") > now + tolerance:
        raise SignatureNotYetValid("the token is not valid yet (nbf is in the future)")
    if _date(claims, "exp") <= now - tolerance:
        raise SignatureExpired("the token has expired (exp is in the past)")
    if claims["iss"] != ISSUER:
        raise WrongIssuer(f"the issuer is not {ISSUER!r}")
    for name in ("sub", "body", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise MalformedSignature(f"the {name!r} claim is not a string")
    if "aud" in claims:
        raise MalformedSignature("the token names an audience ('aud'); QStash's never do")
