"""One pooled ``httpx.Client`` per process, with safe retries and errors mapped at the boundary.

Network failures, 5xx and 429 answers are retried with exponential backoff and jitter,
honouring ``Retry-After``. Retrying a POST is safe because every publish carries a
deduplication id fixed *before* the first attempt (see ``api.py``): when only the answer was
lost, QStash recognises the retry and answers with the first message id.

The ``httpx.Client`` is created on first use, not on construction, and re-created in a
forked child: gunicorn with ``preload_app`` forks workers after the app (and possibly this
object) exists, and a connection pool must never be shared across processes.
"""

from __future__ import annotations

import functools
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.qstash import timing
from app.qstash.client.errors import (
    QStashAPIError,
    QStashConnectionError,
    QStashError,
    RateLimitError,
)

DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
USER_AGENT = "qstash-jobs/0.1 (+httpx)"


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Return the wait ``Retry-After`` or QStash's rate-limit reset asks for (0 s … a day).

    QStash's ``Burst-RateLimit-Reset`` / ``RateLimit-Reset`` are unix timestamps. Read by
    the one reader of these headers, :func:`app.qstash.timing.retry_after_seconds`: what
    is no finite wait within a day is None, and no value raises.
    """
    reset = headers.get("Burst-RateLimit-Reset") or headers.get("RateLimit-Reset")
    return timing.retry_after_seconds(
        headers.get("Retry-After"), reset, time.time() if now is None else now
    )


def error_message(response: httpx.Response) -> str:
    """Return QStash's ``{"error": …}`` text, or the start of the body."""
    try:
        data = response.json()
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    text = response.text.strip()
    return text[:300] or response.reason_phrase or "no details"


class Transport:
    """Send REST calls to QStash with retries; raise only ``QStashError`` subclasses."""

    def __init__(
        self,
        *,
        token: str,
        base_url: str,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        max_retry_after: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(base_url) if isinstance(base_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"QSTASH_URL must be an absolute http(s) URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._settings: dict[str, Any] = {
            "transport": transport or _default_transport(),
            "timeout": timeout,
            "headers": {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT},
        }
        self._client: httpx.Client | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def client(self) -> httpx.Client:
        """Return this process's pooled ``httpx.Client``, creating it on first use."""
        client = self._client
        if client is not None and self._pid == os.getpid():
            return client
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                # A client inherited through fork is dropped, never closed: its sockets
                # belong to the parent.
                self._client = _new_client(self._settings)
                self._pid = os.getpid()
            return self._client

    def close(self) -> None:
        """Close the connection pool (a later call opens a new one)."""
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = None

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        params: Mapping[str, str | Sequence[str]] | None = None,
    ) -> httpx.Response:
        """Send one call, retrying failures that are safe to retry; return a 2xx response."""
        try:
            url = _parsed_url(self.base_url + path)
        except httpx.InvalidURL as exc:
            raise QStashError(f"cannot call QStash at {self.base_url}{path}: {exc}") from exc
        attempt = 0
        while True:
            try:
                response = self.client().request(
                    method, url, headers=headers, content=content, params=params
                )
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise QStashConnectionError(
                        f"no answer from QStash at {self.base_url} ({type(exc).__name__}:"
                        f" {exc or 'no details'}) after {attempt + 1} attempt(s)"
                    ) from exc
                self._sleep(self._backoff(attempt))
            except httpx.HTTPError as exc:
                raise QStashConnectionError(f"cannot call QStash: {exc}") from exc
            else:
                if response.is_success or _already_deleted(method, attempt, response):
                    return response
                wait = self._retry_wait(response, attempt)
                if wait is None:
                    raise _api_error(response)
                self._sleep(wait)
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)

    def _retry_wait(self, response: httpx.Response, attempt: int) -> float | None:
        status = response.status_code
        if attempt >= self.retries or not (status == 429 or status >= 500):
            return None
        asked = retry_after_seconds(response.headers)
        if asked is None:
            return self._backoff(attempt)
        return asked if asked <= self.max_retry_after else None


@functools.lru_cache(maxsize=1024)  # a job publishes to the same URL again and again
def _parsed_url(url: str) -> httpx.URL:
    return httpx.URL(url)


def _new_client(settings: dict[str, Any]) -> httpx.Client:
    client = httpx.Client(**settings)
    # httpx adds these to every request; QStash needs neither ("Connection: keep-alive"
    # is HTTP/1.1's default, any answer is JSON), and each header costs time per publish.
    for name in ("Accept", "Connection"):
        del client.headers[name]
    return client


def _default_transport() -> httpx.HTTPTransport:
    # h11 writes a request's head and body separately; with Nagle's algorithm on, the
    # body waits for the peer's delayed ACK (~40 ms on Linux). Send segments at once.
    return httpx.HTTPTransport(
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
    )


def _already_deleted(method: str, attempt: int, response: httpx.Response) -> bool:
    # A DELETE retried after a lost answer finds nothing: the first attempt deleted it.
    return method == "DELETE" and attempt > 0 and response.status_code == 404


def _api_error(response: httpx.Response) -> QStashAPIError:
    message = error_message(response)
    if response.status_code == 429:
        return RateLimitError(
            message, retry_after=retry_after_seconds(response.headers), response=response
        )
    return QStashAPIError(response.status_code, message, response=response)
