"""Test helpers for app developers: signed deliveries, and a stub queue that drains into the app.

```python
from app.testing import DeliveryClient, StubQueue

def test_welcome_email(app):
    client = DeliveryClient(app)
    response = client.deliver("send-email", {"to": "a@example.com", "template": "welcome"})
    assert response.status_code == 200

def test_signup_sends_welcome_email(app):
    queue = StubQueue.install(app)          # Job.enqueue now publishes here
    with app.app_context():
        send_email.enqueue({"to": "a@example.com", "template": "welcome"}, delay="10m")
    assert queue.published("send-email")[0].options.delay == "10m"
    queue.drain(fail_fast=True)             # delivers; re-raises the handler's exception
```

Deliveries are signed exactly as QStash signs them (``app.qstash.signature.sign``) with
the app's current signing key, for APP_URL + the job's path, and carry QStash's headers.
The stub queue (like Dramatiq's ``StubBroker``) records every publish with all its options
and ``drain()`` delivers them through ``DeliveryClient`` in order of due time on a virtual
clock (nobody waits for a delay), retrying failures as QStash would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask.testing import FlaskClient

from app.jobs import URL_PREFIX
from app.publishing.client import EXTENSION
from app.qstash import timing
from app.qstash.callbacks import Callback
from app.qstash.client.expressions import duration_seconds
from app.qstash.client.models import PublishResult
from app.qstash.client.options import Message, PublishOptions, unix_seconds
from app.qstash.signature import sign
from app.store import get_store

if TYPE_CHECKING:
    from flask import Flask
    from werkzeug.test import TestResponse

#: QStash's default number of retries (so up to four deliveries).
DEFAULT_RETRIES = 3
_JSON = "application/json"


def encode_payload(payload: Any) -> bytes:
    """Serialise ``payload`` the way publishers do: compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def delivery_headers(
    app: Flask,
    path: str,
    body: bytes,
    *,
    message_id: str | None = None,
    retried: int = 0,
    schedule_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    key: str | None = None,
    signed: bool = True,
) -> dict[str, str]:
    """Return the headers QStash would send when delivering ``body`` to ``path``."""
    url = app.config["APP_URL"].rstrip("/") + path
    result = {
        "Content-Type": "application/json",
        "User-Agent": "Upstash-QStash",
        "Upstash-Message-Id": message_id or f"msg_{uuid.uuid4().hex}",
        "Upstash-Retried": str(retried),
    }
    if signed:
        signing_key = key or app.config["QSTASH_CURRENT_SIGNING_KEY"]
        result["Upstash-Signature"] = sign(body, url=url, key=signing_key)
    if schedule_id is not None:
        result["Upstash-Schedule-Id"] = schedule_id
    result.update(headers or {})
    return result


class DeliveryClient(FlaskClient):
    """A Flask test client that can also make signed QStash deliveries."""

    def __init__(self, app: Flask, *args: Any, **kwargs: Any) -> None:
        super().__init__(app, *args, use_cookies=False, **kwargs)

    def deliver(
        self,
        job: str,
        payload: Any = None,
        *,
        body: bytes | None = None,
        message_id: str | None = None,
        retried: int = 0,
        schedule_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
        query: str = "",
    ) -> TestResponse:
        """POST a signed delivery of ``payload`` (or raw ``body``) to the job ``job``.

        ``query`` (``"run=…&step=2"``) is part of the URL, and so of what is signed.
        """
        raw = encode_payload(payload) if body is None else body
        path = f"{URL_PREFIX}/{job}" + (f"?{query}" if query else "")
        sent = delivery_headers(
            self.application,
            path,
            raw,
            message_id=message_id,
            retried=retried,
            schedule_id=schedule_id,
            headers=headers,
            key=key,
        )
        return self.post(path, data=raw, headers=sent)


@dataclass
class Published:
    """One message the stub queue accepted, and what happened to it so far."""

    message_id: str
    message: Message
    due: float
    sequence: int
    retried: int = 0
    state: str = "pending"  # "pending", "delivered" or "failed" (in the dead-letter list)
    statuses: list[int] = field(default_factory=list)

    @property
    def job(self) -> str:
        """The job name the destination URL points at (``""`` for other URLs)."""
        _, _, name = urlsplit(self.message.destination).path.rpartition(f"{URL_PREFIX}/")
        return name

    @property
    def payload(self) -> Any:
        """The published body, parsed as JSON."""
        return json.loads(self.message.body) if self.message.body else None

    @property
    def options(self) -> PublishOptions:
        """Every option the message was published with."""
        return self.message.options

    @property
    def max_retries(self) -> int:
        """How many retries QStash would make (the message's, or QStash's default 3)."""
        retries = self.message.options.retries
        return DEFAULT_RETRIES if retries is None else retries


class StubQueue:
    """An in-memory stand-in for the QStash client that can ``drain()`` into the app."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.clock = time.time()
        self.messages: list[Published] = []
        self._dedup: dict[str, str] = {}

    @classmethod
    def install(cls, app: Flask) -> StubQueue:
        """Install a stub queue as ``app``'s publisher and return it."""
        stub = cls(app)
        app.extensions[EXTENSION] = stub
        return stub

    def send(self, message: Message) -> PublishResult:
        """Record one message, as QStash would accept it (deduplication included).

        A URL-group name is refused (``ValueError``): the stub keeps no groups, so it could
        neither fan out nor answer one id per endpoint.
        """
        if "://" not in message.destination:
            raise ValueError(
                f"the stub queue has no URL groups, so it cannot fan out to"
                f" {message.destination!r}: test group publishing against the dev server"
                " (app.devserver.DevServer), or publish to a job's URL here"
            )
        key = self._dedup_key(message)
        if key is not None and key in self._dedup:
            return PublishResult(self._dedup[key], deduplicated=True)
        entry = Published(
            message_id=f"msg_stub_{uuid.uuid4().hex}",
            message=message,
            due=self._due(message.options),
            sequence=len(self.messages),
        )
        self.messages.append(entry)
        if key is not None:
            self._dedup[key] = entry.message_id
        return PublishResult(entry.message_id)

    def send_batch(self, messages: Iterable[Message]) -> list[PublishResult]:
        """Record many messages."""
        return [self.send(message) for message in messages]

    def published(self, job: str | None = None) -> list[Published]:
        """Return every recorded message, or those for ``job``, in publish order."""
        return [m for m in self.messages if job is None or m.job == job]

    @property
    def pending(self) -> list[Published]:
        """Messages not delivered yet, in the order ``drain`` will deliver them."""
        waiting = [m for m in self.messages if m.state == "pending"]
        return sorted(waiting, key=lambda m: (m.due, m.sequence))

    @property
    def dead_letters(self) -> list[Published]:
        """Messages that failed for good (retries exhausted or answered 489)."""
        return [m for m in self.messages if m.state == "failed"]

    def drain(self, *, fail_fast: bool = False, max_deliveries: int = 1000) -> list[Published]:
        """Deliver every pending message (and its retries and callbacks) until none is left.

        With ``fail_fast=True`` the first handler exception is re-raised here, as Dramatiq's
        ``StubBroker.join(fail_fast=True)`` does. Returns the messages that settled.
        """
        settled: list[Published] = []
        with _captured_exceptions(self.app) as errors:
            for _ in range(max_deliveries):
                pending = self.pending
                if not pending:
                    return settled
                entry = pending[0]
                self.clock = max(self.clock, entry.due)
                self._attempt(entry, errors, fail_fast)
                if entry.state != "pending":
                    settled.append(entry)
        raise RuntimeError(f"the stub queue still had messages after {max_deliveries} deliveries")

    def _attempt(self, entry: Published, errors: dict[str, BaseException], fail: bool) -> None:
        # Time passes on the virtual clock only: write what the store queued (a released
        # claim, on PostgreSQL 50 ms later) before the next delivery, as QStash's retry
        # delays would leave time to.
        store = get_store(self.app)
        if store is not None:
            store.flush()
        response = self._deliver(entry)
        entry.statuses.append(response.status_code)
        error = errors.pop(entry.message_id, None)
        self._callback(entry, entry.message.options.callback, response)
        if response.status_code < 300:
            entry.state = "delivered"
        elif response.status_code == 489 or entry.retried >= entry.max_retries:
            entry.state = "failed"
            self._callback(entry, entry.message.options.failure_callback, response, dlq=True)
        else:
            entry.due = self.clock + self._backoff(entry, response)
            entry.retried += 1
        if fail and error is not None:
            raise error

    def _deliver(self, entry: Published) -> TestResponse:
        job = entry.job
        app_url = self.app.config["APP_URL"].rstrip("/")
        # A query (a workflow's run and step) travels with the URL QStash signs.
        destination, _, query = entry.message.destination.partition("?")
        if destination != f"{app_url}{URL_PREFIX}/{job}" or not job:
            raise ValueError(
                f"the stub queue delivers only to this app's jobs ({app_url}{URL_PREFIX}/…),"
                f" not to {entry.message.destination!r}"
            )
        options = entry.message.options
        headers = {"Content-Type": options.content_type or "application/json", **options.headers}
        return DeliveryClient(self.app).deliver(
            job, body=entry.message.body, message_id=entry.message_id,
            retried=entry.retried, headers=headers, query=query,
        )  # fmt: skip

    def _backoff(self, entry: Published, response: TestResponse) -> float:
        # The same rules as the dev server: the endpoint's wish, else the expression,
        # else QStash's default backoff.
        asked = timing.retry_after_seconds(
            response.headers.get("Retry-After"),
            response.headers.get("X-RateLimit-Reset"),
            now=self.clock,
        )
        if asked is not None:
            return asked
        return timing.retry_delay_seconds(entry.message.options.retry_delay, entry.retried)

    def _callback(
        self, entry: Published, url: str | None, response: TestResponse, *, dlq: bool = False
    ) -> None:
        app_url = self.app.config["APP_URL"].rstrip("/")
        if url is None or not url.startswith(f"{app_url}{URL_PREFIX}/"):
            return  # only callbacks into this app can be delivered in a test
        body = callback_body(entry, response, dlq_id=f"dlq_{entry.message_id}" if dlq else None)
        self.send(Message(url, encode_payload(body), PublishOptions(content_type=_JSON)))

    def _dedup_key(self, message: Message) -> str | None:
        options = message.options
        if options.deduplication_id is not None:
            return f"id:{options.deduplication_id}"
        if options.content_based_deduplication:
            digest = hashlib.sha256(message.destination.encode() + b"\n" + message.body)
            return f"content:{digest.hexdigest()}"
        return None

    def _due(self, options: PublishOptions) -> float:
        if options.not_before is not None:
            return float(unix_seconds(options.not_before))
        if options.delay is not None:
            return self.clock + duration_seconds(options.delay)
        return self.clock


def callback_body(
    entry: Published, response: TestResponse, *, dlq_id: str | None = None
) -> dict[str, Any]:
    """Return the body QStash posts to a (failure) callback after an attempt."""
    return Callback(
        status=response.status_code,
        header={name: response.headers.getlist(name) for name in response.headers.keys()},
        body=response.get_data(),
        retried=entry.retried,
        max_retries=entry.max_retries,
        source_message_id=entry.message_id,
        url=entry.message.destination,
        method=entry.message.options.method or "POST",
        source_header={k: [v] for k, v in entry.message.options.headers_dict().items()},
        source_body=entry.message.body,
        not_before=int(entry.due * 1000),
        created_at=int(entry.due * 1000),
        schedule_id="",
        caller_ip="127.0.0.1",
        dlq_id=dlq_id,
    ).to_wire()


class _ExceptionCatcher(logging.Handler):
    """Collect the exceptions ``with_qstash`` logs, by message id."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: dict[str, BaseException] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message_id = getattr(record, "message_id", None)
        if record.exc_info and record.exc_info[1] is not None and message_id:
            self.errors[message_id] = record.exc_info[1]


@contextmanager
def _captured_exceptions(app: Flask) -> Iterator[dict[str, BaseException]]:
    catcher = _ExceptionCatcher()
    app.logger.addHandler(catcher)
    try:
        yield catcher.errors
    finally:
        app.logger.removeHandler(catcher)
