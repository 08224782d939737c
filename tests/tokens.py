"""Hand-made tokens for attack tests: everything QStash would never sign."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from app.qstash.signature import body_hash


def b64url(data: bytes) -> str:
    """Return unpadded base64url, as JWTs encode their parts."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def claims_for(raw: bytes, url: str, **overrides: Any) -> dict[str, Any]:
    """Return QStash-like claims for ``raw`` at ``url``; a ``None`` override drops a claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "Upstash",
        "sub": url,
        "exp": now + 300,
        "nbf": 0,
        "iat": now,
        "jti": "jwt_test",
        "body": body_hash(raw),
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def forge(header: dict[str, Any], claims: dict[str, Any], key: str | None) -> str:
    """Build a JWT by hand; ``key`` signs it with HMAC-SHA256 whatever ``alg`` says."""
    return forge_raw(json.dumps(header).encode(), json.dumps(claims).encode(), key)


def forge_raw(header: bytes, payload: bytes, key: str | None) -> str:
    """Build a JWT from raw header and payload text (any bytes, JSON or not), signed by ``key``."""
    return resign(f"{b64url(header)}.{b64url(payload)}", key)


def resign(signing_input: str, key: str | None) -> str:
    """Return ``header.payload`` (spelled as given) with its HMAC-SHA256 under ``key``."""
    signature = b""
    if key is not None:
        signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"
