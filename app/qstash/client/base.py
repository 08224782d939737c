"""What every part of the client shares: the transport, JSON calls, ids in paths.

``QStash`` (``api.py``) = ``BaseClient`` + ``ManagementAPI`` (``management.py``) +
publishing and messages.
"""

from __future__ import annotations

import base64
import os
from typing import Any
from urllib.parse import quote

import httpx

from app.qstash.client.errors import QStashAPIError
from app.qstash.client.options import PublishOptions
from app.qstash.client.transport import DEFAULT_TIMEOUT, Transport

DEFAULT_BASE_URL = "https://qstash.upstash.io"
JSON = "application/json"


def random_id() -> str:
    """Return 96 random bits, URL-safe: a deduplication id no other publish carries."""
    return base64.urlsafe_b64encode(os.urandom(12)).decode("ascii")


def as_bytes(body: bytes | str | None) -> bytes:
    """Return a body as bytes (``None`` is empty, text is UTF-8)."""
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else body


def path_segment(value: str, name: str) -> str:
    """Return an id quoted for a URL path; refuse ids that could change the path."""
    if not isinstance(value, str) or not value or "/" in value or _unsafe(value):
        raise ValueError(f"{name} must be a non-empty id without '/', not {value!r}")
    return quote(value, safe="")


def _unsafe(value: str) -> bool:
    return any(ord(char) < 33 for char in value) or value in (".", "..")


class BaseClient:
    """The connection, the JSON calls and the deduplication ids every API part shares."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.25,
        auto_deduplication: bool = True,
    ) -> None:
        if not isinstance(token, str) or not token.strip():
            raise ValueError("a QStash token is required (QSTASH_TOKEN)")
        self.auto_deduplication = auto_deduplication
        self.http = Transport(
            token=token.strip(),
            base_url=base_url,
            transport=transport,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except (ValueError, RecursionError):  # RecursionError: nested past the stack
            raise QStashAPIError(
                response.status_code, "the answer is not JSON", response=response
            ) from None

    def _needs_dedup_id(self, options: PublishOptions) -> bool:
        explicit = options.deduplication_id or options.content_based_deduplication
        return self.auto_deduplication and not explicit

    def _dedup_id(self, options: PublishOptions) -> str | None:
        return random_id() if self._needs_dedup_id(options) else None
