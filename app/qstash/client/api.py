"""``QStash``: the REST client (publish, batch, messages, schedules, queues, DLQ, keys).

Usable without Flask (``QStash(token, base_url=…)``); inside an app, ``client_for(app)``
builds one per app from its config. Every publish carries a deduplication id fixed before
the first attempt (the caller's, or a fresh one unless content-based deduplication is
asked for), so the transport's retries can never create a second message.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from app.cron import parse_cron
from app.errors import JobDefinitionError
from app.qstash.client.errors import QStashAPIError
from app.qstash.client.models import (
    DlqMessage,
    DlqPage,
    PublishResult,
    Queue,
    Schedule,
    SigningKeys,
)
from app.qstash.client.options import (
    Message,
    PublishOptions,
    check_destination,
    check_name,
    publish_options,
)
from app.qstash.client.transport import DEFAULT_TIMEOUT, Transport

DEFAULT_BASE_URL = "https://qstash.upstash.io"
_JSON = "application/json"
#: Options a schedule cannot carry (they describe one message, not a series).
_NOT_FOR_SCHEDULES = ("not_before", "deduplication_id", "content_based_deduplication")


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode_json(payload: Any) -> bytes:
    """Serialise ``payload`` as compact UTF-8 JSON; raise ``ValueError`` if it cannot be."""
    try:
        return _ENCODER.encode(payload).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the payload is not JSON-serialisable: {exc}") from None


def json_message(
    destination: str,
    payload: Any,
    *,
    queue: str | None = None,
    options: PublishOptions | None = None,
    **option_values: Any,
) -> Message:
    """Return a ``Message`` publishing ``payload`` as JSON to ``destination``.

    Pass either option values (``retries=3, delay="5m"``) or a prepared ``options``
    object, which many messages can share (it is immutable and validated once).
    """
    if options is None:
        option_values.setdefault("content_type", _JSON)
        options = publish_options(**option_values)
    elif option_values:
        raise ValueError("pass either options=PublishOptions(...) or option values, not both")
    return Message(destination, encode_json(payload), options, queue)


def _random_id() -> str:
    # 128 random bits, URL-safe: a deduplication id no other publish will ever carry.
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode("ascii")


def _body(body: bytes | str | None) -> bytes:
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else body


def _segment(value: str, name: str) -> str:
    if not isinstance(value, str) or not value or "/" in value or _unsafe(value):
        raise ValueError(f"{name} must be a non-empty id without '/', not {value!r}")
    return quote(value, safe="")


def _unsafe(value: str) -> bool:
    return any(ord(char) < 33 for char in value) or value in (".", "..")


class QStash:
    """A client for QStash's REST API v2 over one pooled ``httpx.Client``."""

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
        except ValueError:
            raise QStashAPIError(
                response.status_code, "the answer is not JSON", response=response
            ) from None

    def _needs_dedup_id(self, options: PublishOptions) -> bool:
        explicit = options.deduplication_id or options.content_based_deduplication
        return self.auto_deduplication and not explicit

    def _dedup_id(self, options: PublishOptions) -> str | None:
        return _random_id() if self._needs_dedup_id(options) else None

    # -- publishing ------------------------------------------------------------------------

    def send(self, message: Message) -> PublishResult:
        """Publish one prepared ``Message`` (through its queue, if it names one)."""
        options = message.options
        headers = options.headers_dict(deduplication_id=self._dedup_id(options))
        data = self._call("POST", message.path, headers=headers, content=message.body)
        return PublishResult.from_json(data)

    def send_batch(self, messages: Iterable[Message]) -> list[PublishResult]:
        """Publish many prepared messages in one ``POST /v2/batch`` call."""
        # One random base per batch, one suffix per message: unique ids, one syscall.
        base = _random_id()
        entries = [
            m.batch_entry(f"{base}-{n}" if self._needs_dedup_id(m.options) else None)
            for n, m in enumerate(messages)
        ]
        if not entries:
            return []
        content = _ENCODER.encode(entries).encode()
        data = self._call("POST", "/v2/batch", headers={"Content-Type": _JSON}, content=content)
        if not isinstance(data, list) or len(data) != len(entries):
            raise QStashAPIError(200, f"unexpected batch answer: {str(data)[:200]}")
        return [PublishResult.from_json(item) for item in data]

    def publish(
        self,
        destination: str,
        body: bytes | str | None = None,
        *,
        queue: str | None = None,
        **options: Any,
    ) -> PublishResult:
        """Publish ``body`` as is to ``destination`` (a URL or URL-group name)."""
        return self.send(Message(destination, _body(body), publish_options(**options), queue))

    def publish_json(
        self, destination: str, payload: Any, *, queue: str | None = None, **options: Any
    ) -> PublishResult:
        """Publish ``payload`` as JSON to ``destination``."""
        return self.send(json_message(destination, payload, queue=queue, **options))

    def enqueue(
        self, queue: str, destination: str, body: bytes | str | None = None, **options: Any
    ) -> PublishResult:
        """Publish ``body`` through the named ``queue`` (QStash creates it if missing)."""
        return self.publish(destination, body, queue=queue, **options)

    def enqueue_json(
        self, queue: str, destination: str, payload: Any, **options: Any
    ) -> PublishResult:
        """Publish ``payload`` as JSON through the named ``queue``."""
        return self.publish_json(destination, payload, queue=queue, **options)

    def batch(self, messages: Iterable[Message]) -> list[PublishResult]:
        """Publish many messages in one call; same as ``send_batch``."""
        return self.send_batch(messages)

    # -- messages --------------------------------------------------------------------------

    def get_message(self, message_id: str) -> dict[str, Any]:
        """Return a not-yet-delivered message as QStash describes it."""
        data: dict[str, Any] = self._call("GET", f"/v2/messages/{_segment(message_id, 'id')}")
        return data

    def cancel_message(self, message_id: str) -> None:
        """Cancel a message that is not delivered yet."""
        self._call("DELETE", f"/v2/messages/{_segment(message_id, 'message id')}")

    def cancel_messages(self, message_ids: Iterable[str]) -> int:
        """Cancel many messages; return how many were cancelled."""
        ids = list(message_ids)
        for message_id in ids:
            _segment(message_id, "message id")
        content = json.dumps({"messageIds": ids}).encode()
        headers = {"Content-Type": _JSON}
        data = self._call("DELETE", "/v2/messages", headers=headers, content=content)
        return int(data.get("cancelled", 0)) if isinstance(data, dict) else 0

    # -- schedules -------------------------------------------------------------------------

    def create_schedule(
        self,
        destination: str,
        cron: str,
        *,
        schedule_id: str | None = None,
        body: bytes | str | None = None,
        queue: str | None = None,
        **options: Any,
    ) -> str:
        """Create a schedule, or update the one with ``schedule_id``; return its id."""
        refused = [name for name in _NOT_FOR_SCHEDULES if options.get(name)]
        if refused:
            raise ValueError(f"a schedule cannot have {', '.join(refused)}")
        try:
            expression = parse_cron(cron).text
        except JobDefinitionError as exc:
            raise ValueError(str(exc)) from None
        headers = {"Upstash-Cron": expression, **PublishOptions(**options).headers_dict()}
        if schedule_id is not None:
            headers["Upstash-Schedule-Id"] = _segment(schedule_id, "schedule id")
        if queue is not None:
            headers["Upstash-Queue-Name"] = check_name(queue, "queue")
        path = f"/v2/schedules/{check_destination(destination)}"
        data = self._call("POST", path, headers=headers, content=_body(body))
        return str(data["scheduleId"]) if isinstance(data, dict) else str(schedule_id)

    def get_schedule(self, schedule_id: str) -> Schedule:
        """Return one schedule."""
        return Schedule.from_json(self._call("GET", self._schedule_path(schedule_id)))

    def list_schedules(self) -> list[Schedule]:
        """Return every schedule of the account."""
        return [Schedule.from_json(item) for item in self._call("GET", "/v2/schedules") or []]

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule."""
        self._call("DELETE", self._schedule_path(schedule_id))

    def pause_schedule(self, schedule_id: str) -> None:
        """Pause a schedule: its cron firings are ignored until resumed."""
        self._call("POST", self._schedule_path(schedule_id) + "/pause")

    def resume_schedule(self, schedule_id: str) -> None:
        """Resume a paused schedule."""
        self._call("POST", self._schedule_path(schedule_id) + "/resume")

    @staticmethod
    def _schedule_path(schedule_id: str) -> str:
        return f"/v2/schedules/{_segment(schedule_id, 'schedule id')}"

    # -- queues ----------------------------------------------------------------------------

    def upsert_queue(self, name: str, *, parallelism: int = 1, paused: bool | None = None) -> None:
        """Create the queue ``name`` or change its parallelism (and paused state, if given)."""
        if type(parallelism) is not int or parallelism < 1:
            raise ValueError(f"parallelism must be an int >= 1, not {parallelism!r}")
        data: dict[str, Any] = {"queueName": check_name(name, "queue"), "parallelism": parallelism}
        if paused is not None:
            data["paused"] = bool(paused)
        content = json.dumps(data).encode()
        self._call("POST", "/v2/queues", headers={"Content-Type": _JSON}, content=content)

    def get_queue(self, name: str) -> Queue:
        """Return one queue."""
        return Queue.from_json(self._call("GET", f"/v2/queues/{check_name(name, 'queue')}"))

    def list_queues(self) -> list[Queue]:
        """Return every queue of the account."""
        return [Queue.from_json(item) for item in self._call("GET", "/v2/queues") or []]

    def delete_queue(self, name: str) -> None:
        """Delete a queue."""
        self._call("DELETE", f"/v2/queues/{check_name(name, 'queue')}")

    def pause_queue(self, name: str) -> None:
        """Pause a queue: messages wait in it until it is resumed."""
        self._call("POST", f"/v2/queues/{check_name(name, 'queue')}/pause")

    def resume_queue(self, name: str) -> None:
        """Resume a paused queue."""
        self._call("POST", f"/v2/queues/{check_name(name, 'queue')}/resume")

    # -- dead-letter queue -----------------------------------------------------------------

    def list_dlq(
        self, *, cursor: str | None = None, count: int | None = None, **filters: str
    ) -> DlqPage:
        """Return one page of the DLQ (filters: messageId, url, queueName, scheduleId…)."""
        params = {key: str(value) for key, value in filters.items() if value is not None}
        if cursor is not None:
            params["cursor"] = cursor
        if count is not None:
            params["count"] = str(count)
        data = self._call("GET", "/v2/dlq", params=params) or {}
        messages = [DlqMessage.from_json(item) for item in data.get("messages") or []]
        return DlqPage(messages=messages, cursor=data.get("cursor") or None)

    def get_dlq(self, dlq_id: str) -> DlqMessage:
        """Return one DLQ message."""
        data = self._call("GET", f"/v2/dlq/{_segment(dlq_id, 'dlq id')}")
        return DlqMessage.from_json(data, dlq_id)

    def delete_dlq(self, dlq_id: str) -> None:
        """Remove one message from the DLQ."""
        self._call("DELETE", f"/v2/dlq/{_segment(dlq_id, 'dlq id')}")

    def delete_dlq_many(self, dlq_ids: Iterable[str]) -> int:
        """Remove many messages from the DLQ; return how many were removed."""
        content = json.dumps({"dlqIds": list(dlq_ids)}).encode()
        data = self._call("DELETE", "/v2/dlq", headers={"Content-Type": _JSON}, content=content)
        return int(data.get("deleted", 0)) if isinstance(data, dict) else 0

    def retry_dlq(self, dlq_id: str, **options: Any) -> PublishResult:
        """Publish a DLQ message again (options override the original's); return the new id."""
        publish_options = PublishOptions(**options)
        headers: Mapping[str, str] = publish_options.headers_dict(
            deduplication_id=self._dedup_id(publish_options)
        )
        path = f"/v2/dlq/retry/{_segment(dlq_id, 'dlq id')}"
        return PublishResult.from_json(self._call("POST", path, headers=headers))

    # -- signing keys ----------------------------------------------------------------------

    def signing_keys(self) -> SigningKeys:
        """Return the account's current and next signing keys."""
        data = self._call("GET", "/v2/keys") or {}
        return SigningKeys(current=str(data.get("current", "")), next=str(data.get("next", "")))
