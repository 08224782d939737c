"""``QStash``: the REST client (publish, batch, messages, schedules, queues, DLQ, keys).

Usable without Flask (``QStash(token, base_url=…)``); inside an app, ``client_for(app)``
builds one per app from its config. Every publish carries a deduplication id fixed before
the first attempt (the caller's, or a fresh one unless content-based deduplication is
asked for), so the transport's retries can never create a second message. Schedules,
queues, the DLQ and signing keys are in ``management.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from app.qstash.client.base import DEFAULT_BASE_URL, JSON, as_bytes, path_segment, random_id
from app.qstash.client.errors import QStashAPIError
from app.qstash.client.events import EventsAPI
from app.qstash.client.flow import FlowControlAPI
from app.qstash.client.groups import GroupsAPI
from app.qstash.client.management import ManagementAPI
from app.qstash.client.models import PublishResult
from app.qstash.client.options import Message, PublishOptions, publish_options

__all__ = ["DEFAULT_BASE_URL", "QStash", "encode_json", "json_message"]

# No NaN or Infinity: JSON has neither, and the receiver refuses a body holding one (489),
# so such a message could be published but never delivered.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


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
        option_values.setdefault("content_type", JSON)
        options = publish_options(**option_values)
    elif option_values:
        raise ValueError("pass either options=PublishOptions(...) or option values, not both")
    return Message(destination, encode_json(payload), options, queue)


class QStash(EventsAPI, GroupsAPI, FlowControlAPI, ManagementAPI):
    """A client for QStash's REST API v2 over one pooled ``httpx.Client``.

    ``QStash(token, base_url=..., transport=..., timeout=..., retries=3, backoff=0.25,
    auto_deduplication=True)``.
    """

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
        base = random_id() + "-"
        needs = self._needs_dedup_id
        entries = [
            m.batch_entry(base + str(n) if needs(m.options) else None)
            for n, m in enumerate(messages)
        ]
        if not entries:
            return []
        content = _ENCODER.encode(entries).encode()
        data = self._call("POST", "/v2/batch", headers={"Content-Type": JSON}, content=content)
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
        return self.send(Message(destination, as_bytes(body), publish_options(**options), queue))

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
        data: dict[str, Any] = self._call("GET", f"/v2/messages/{path_segment(message_id, 'id')}")
        return data

    def cancel_message(self, message_id: str) -> None:
        """Cancel a message that is not delivered yet."""
        self._call("DELETE", f"/v2/messages/{path_segment(message_id, 'message id')}")

    def cancel_messages(self, message_ids: Iterable[str]) -> int:
        """Cancel many messages; return how many were cancelled."""
        ids = list(message_ids)
        for message_id in ids:
            path_segment(message_id, "message id")
        content = json.dumps({"messageIds": ids}).encode()
        headers = {"Content-Type": JSON}
        data = self._call("DELETE", "/v2/messages", headers=headers, content=content)
        return int(data.get("cancelled", 0)) if isinstance(data, dict) else 0
