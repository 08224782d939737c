"""Publish options and messages: validated on construction, turned into QStash's headers.

``PublishOptions`` holds every option of ``POST /v2/publish`` (QSTASH_PROTOCOL.md §5) and
checks each one when it is built, so a bad delay, retry expression, callback URL or header
is a ``ValueError`` where the caller wrote it, never a rejected message later. ``Message``
is one publish (destination + body + options + queue), the unit both the HTTP client and
the test stub queue accept.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from app.qstash.client.expressions import Duration, duration_header, parse_retry_delay

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_url(url: object, name: str) -> str:
    """Return ``url`` if it is an absolute http(s) URL; raise ``ValueError`` otherwise."""
    if not isinstance(url, str) or not _is_http_url(url):
        raise ValueError(f"{name} must be an absolute http(s) URL, not {url!r}")
    return url


@functools.lru_cache(maxsize=1024)  # a job's URLs are checked on every publish
def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not _has_control(url)


def check_name(value: object, name: str) -> str:
    """Return ``value`` if it is a QStash resource name (letters, digits, ``_ . -``)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"{name} must be 1-200 letters, digits, '_', '.' or '-', not {value!r}")
    return value


def check_destination(destination: object) -> str:
    """Return ``destination`` if it is an http(s) URL or a URL-group name."""
    if isinstance(destination, str) and "://" in destination:
        if "#" in destination:
            raise ValueError(f"destination {destination!r} has a #fragment, which is never sent")
        return check_url(destination, "destination")
    return check_name(destination, "destination (a URL or a URL-group name)")


def _has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value or _has_control(value):
        raise ValueError(f"{name} must be a non-empty single-line string, not {value!r}")
    return value


def _header_name(name: object) -> str:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ValueError(f"header name {name!r} is not a valid HTTP header name")
    return name


def unix_seconds(value: datetime | int | float, *, name: str = "not_before") -> int:
    """Return ``value`` (an aware or UTC-naive datetime, or unix seconds) as unix seconds."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return math.ceil(aware.timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        if value < 0:
            raise ValueError(f"{name} must not be before 1970, got {value!r}")
        return math.ceil(value)
    raise ValueError(f"{name} must be a datetime or unix seconds, not {value!r}")


@dataclass(frozen=True, slots=True)
class FlowControl:
    """Limit deliveries sharing ``key``: ``parallelism`` at once, ``rate`` per ``period``."""

    key: str
    parallelism: int | None = None
    rate: int | None = None
    period: Duration | None = None

    def __post_init__(self) -> None:
        check_name(self.key, "flow control key")
        for name in ("parallelism", "rate"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"flow control {name} must be an int >= 1, not {value!r}")
        if self.period is not None:
            duration_header(self.period, name="flow control period")
        if self.parallelism is None and self.rate is None:
            raise ValueError("flow control needs a parallelism, a rate or both")

    def header_value(self) -> str:
        """Return the ``Upstash-Flow-Control-Value`` text, e.g. ``parallelism=5, rate=10``."""
        parts = []
        if self.parallelism is not None:
            parts.append(f"parallelism={self.parallelism}")
        if self.rate is not None:
            parts.append(f"rate={self.rate}")
        if self.period is not None:
            parts.append(f"period={duration_header(self.period, name='period')}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Redact:
    """Fields QStash shows as ``REDACTED:<sha256>`` in its API, logs and console.

    ``body=True`` hides the body; ``headers=True`` every forwarded header, or a list of
    names (``headers=["Authorization"]``) just those. Deliveries still carry the originals.
    """

    body: bool = False
    #: ``True``, ``False`` or header names (kept as a tuple, so options stay hashable).
    headers: bool | Sequence[str] = False

    def __post_init__(self) -> None:
        if type(self.body) is not bool:
            raise ValueError(f"Redact body must be True or False, not {self.body!r}")
        headers = self.headers
        if isinstance(headers, list | tuple):
            for name in headers:
                _header_name(name)
            object.__setattr__(self, "headers", tuple(dict.fromkeys(headers)))
        elif type(headers) is not bool:
            raise ValueError(
                f"Redact headers must be True, False or a list of header names, not {headers!r}"
            )
        if not self.body and not self.headers:
            raise ValueError("Redact() redacts nothing: pass body=True and/or headers=...")

    def header_value(self) -> str:
        """Return the ``Upstash-Redact-Fields`` text, e.g. ``body,header[Authorization]``."""
        parts = ["body"] if self.body else []
        if self.headers is True:
            parts.append("header")
        elif self.headers:
            parts.extend(f"header[{name}]" for name in self.headers)
        return ",".join(parts)


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """Every option of one publish; ``None`` leaves QStash's default."""

    method: str | None = None
    content_type: str | None = None
    delay: Duration | None = None
    not_before: datetime | int | float | None = None
    retries: int | None = None
    retry_delay: str | None = None
    callback: str | None = None
    failure_callback: str | None = None
    deduplication_id: str | None = None
    content_based_deduplication: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: Duration | None = None
    label: str | None = None
    flow_control: FlowControl | None = None
    redact: Redact | None = None
    _headers: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.method is not None and self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(sorted(METHODS))}")
        if self.retries is not None and (type(self.retries) is not int or self.retries < 0):
            raise ValueError(f"retries must be an int >= 0, not {self.retries!r}")
        if self.retry_delay is not None:
            parse_retry_delay(self.retry_delay)
        for name in ("callback", "failure_callback"):
            if getattr(self, name) is not None:
                check_url(getattr(self, name), name)
        for name in ("content_type", "deduplication_id", "label"):
            if getattr(self, name) is not None:
                _text(getattr(self, name), name)
        if not isinstance(self.flow_control, FlowControl | None):
            raise ValueError("flow_control must be a FlowControl(key, parallelism, rate, period)")
        if not isinstance(self.redact, Redact | None):
            raise ValueError(f"redact must be a Redact(body=..., headers=...), not {self.redact!r}")
        # Building the headers validates the rest; they are kept for every send.
        object.__setattr__(self, "_headers", self._build_headers())

    def headers_dict(self, *, deduplication_id: str | None = None) -> dict[str, str]:
        """Return the ``Upstash-*`` (and ``Content-Type``) headers these options send."""
        headers = dict(self._headers)
        if deduplication_id is not None and self.deduplication_id is None:
            headers["Upstash-Deduplication-Id"] = deduplication_id
        return headers

    def _build_headers(self) -> dict[str, str]:
        h: dict[str, str] = {}
        if self.content_type is not None:
            h["Content-Type"] = self.content_type
        if self.method is not None:
            h["Upstash-Method"] = self.method
        for name, value in self.headers.items():
            h[f"Upstash-Forward-{_header_name(name)}"] = _text(str(value), f"header {name}")
        if self.retries is not None:
            h["Upstash-Retries"] = str(self.retries)
        if self.retry_delay is not None:
            h["Upstash-Retry-Delay"] = self.retry_delay
        if self.callback is not None:
            h["Upstash-Callback"] = self.callback
        if self.failure_callback is not None:
            h["Upstash-Failure-Callback"] = self.failure_callback
        if self.delay is not None:
            h["Upstash-Delay"] = duration_header(self.delay, name="delay")
        if self.not_before is not None:
            h["Upstash-Not-Before"] = str(unix_seconds(self.not_before))
        if self.deduplication_id is not None:
            h["Upstash-Deduplication-Id"] = self.deduplication_id
        if self.content_based_deduplication:
            h["Upstash-Content-Based-Deduplication"] = "true"
        if self.timeout is not None:
            h["Upstash-Timeout"] = duration_header(self.timeout, name="timeout")
        if self.label is not None:
            h["Upstash-Label"] = self.label
        if self.flow_control is not None:
            h["Upstash-Flow-Control-Key"] = self.flow_control.key
            h["Upstash-Flow-Control-Value"] = self.flow_control.header_value()
        if self.redact is not None:
            h["Upstash-Redact-Fields"] = self.redact.header_value()
        return h


@dataclass(slots=True)  # not frozen: built per publish, and frozen init is slower
class Message:
    """One publish: where to, what body, with which options, through which queue."""

    destination: str
    body: bytes = b""
    options: PublishOptions = field(default_factory=PublishOptions)
    queue: str | None = None

    def __post_init__(self) -> None:
        check_destination(self.destination)
        if not isinstance(self.body, bytes):
            raise ValueError(f"body must be bytes, not {type(self.body).__name__}")
        if self.queue is not None:
            check_name(self.queue, "queue")

    @property
    def path(self) -> str:
        """The REST path that publishes this message (``/v2/publish/…`` or ``/v2/enqueue/…``)."""
        if self.queue is not None:
            return f"/v2/enqueue/{self.queue}/{self.destination}"
        return f"/v2/publish/{self.destination}"

    def batch_entry(self, deduplication_id: str | None) -> dict[str, Any]:
        """Return this message as one element of a ``POST /v2/batch`` array."""
        try:
            body = self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("a batched message's body must be UTF-8 text") from None
        headers = self.options.headers_dict(deduplication_id=deduplication_id)
        entry: dict[str, Any] = {"destination": self.destination, "headers": headers, "body": body}
        if self.queue is not None:
            entry["queue"] = self.queue
        return entry


_CACHE: dict[tuple[tuple[str, type, Any], ...], PublishOptions] = {}
_CACHE_SIZE = 256


def publish_options(**values: Any) -> PublishOptions:
    """Return ``PublishOptions(**values)``, reusing an identical, already validated instance.

    A job publishes with the same options again and again; validating them once keeps a
    publish as cheap as the official SDK's, which validates nothing.
    """
    # Keyword order is part of the key: one call site always passes the same order.
    key = tuple([(name, type(value), value) for name, value in values.items()])
    try:
        cached = _CACHE.get(key)
    except TypeError:  # an unhashable value (forwarded headers): no reuse
        return PublishOptions(**values)
    if cached is None:
        cached = PublishOptions(**values)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[key] = cached
    return cached
