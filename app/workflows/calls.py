"""``ctx.call``'s request: the SSRF-safe outbound client deliver-webhook uses, bounded.

Private, loopback and metadata addresses are refused on the address actually connected
(``WEBHOOK_ALLOWED_NETWORKS`` opens some), redirects are not followed, the whole request
ends within ``WEBHOOK_TIMEOUT`` and at most ``WEBHOOK_MAX_RESPONSE_BYTES`` of the answer are
kept, never decompressed.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from flask import current_app

from app.errors import NonRetryableError
from app.outbound import blocked_cause, configured_client, deadline, split_credentials

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})


def _content(body: Any, headers: dict[str, str]) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")


def request(method: str, url: str, *, body: Any, headers: dict[str, str]) -> dict[str, Any]:
    """Send one request; return ``{"status", "headers", "body", "truncated"}``."""
    method = method.upper()
    if method not in _METHODS:
        raise NonRetryableError(f"ctx.call: unsupported method {method!r:.20}", code="bad_call")
    headers = dict(headers)
    headers.setdefault("Accept-Encoding", "identity")
    config = current_app.config
    limit = config["WEBHOOK_MAX_RESPONSE_BYTES"]
    try:
        target, auth = split_credentials(url)
        content = _content(body, headers)
        with (
            deadline(config["WEBHOOK_TIMEOUT"]),
            configured_client(current_app).stream(
                method, target, content=content, headers=headers, auth=auth
            ) as answer,
        ):
            kept = bytearray()
            truncated = False
            for chunk in answer.iter_raw():
                kept += chunk[: limit - len(kept)]
                if len(kept) >= limit:
                    truncated = True
                    break
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, UnicodeError) as exc:
        message = f"ctx.call: cannot request {url!r:.200}: {exc}"
        raise NonRetryableError(message, code="bad_call") from None
    except httpx.HTTPError as exc:
        blocked = blocked_cause(exc)
        if blocked is not None:  # no retry can reach a refused address
            raise NonRetryableError(f"ctx.call: {blocked}", code="blocked_address") from None
        raise
    return {
        "status": answer.status_code,
        "headers": dict(answer.headers.items()),
        "body": bytes(kept).decode("utf-8", "replace"),
        "truncated": truncated,
    }
