"""The body QStash posts to a callback or failure-callback URL, as a typed object.

QStash publishes a new signed message to the callback URL whose JSON body describes the
attempt (QSTASH_PROTOCOL.md §4): the endpoint's ``status``, its response ``body`` and the
original ``sourceBody`` (both **base64**), ``retried``/``maxRetries``, ``sourceMessageId``,
…; a failure callback adds ``dlqId``. ``CallbackSchema`` decodes it into ``Callback`` (and
``Callback.to_wire`` encodes one: the dev server and the stub queue build theirs so); use
it as a job's schema (``@job("x-failed", schema=CallbackSchema)``). Unknown fields are
ignored so that new fields QStash adds do not break the endpoint.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load


class Base64Bytes(fields.Field[bytes]):
    """A base64 string on the wire, raw bytes in Python (``null`` and ``""`` → ``b""``)."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> bytes:
        if value is None or value == "":
            return b""
        if not isinstance(value, str):
            raise ValidationError("Not a base64 string.")
        try:
            return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError("Not valid base64.") from None

    def _serialize(self, value: bytes | None, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else base64.b64encode(value).decode("ascii")


@dataclass(frozen=True)
class Callback:
    """One callback from QStash about an attempt (or, with ``dlq_id``, a final failure)."""

    status: int
    body: bytes
    retried: int
    max_retries: int | None
    source_message_id: str | None
    url: str | None
    method: str | None
    source_body: bytes
    header: Mapping[str, list[str]] = field(default_factory=dict)
    source_header: Mapping[str, list[str]] = field(default_factory=dict)
    topic_name: str | None = None
    endpoint_name: str | None = None
    schedule_id: str | None = None
    caller_ip: str | None = None
    not_before: int | None = None
    created_at: int | None = None
    dlq_id: str | None = None
    #: Why the attempt got no HTTP answer (timeout, refused connection), if it got none.
    error: str | None = None

    @property
    def is_failure(self) -> bool:
        """Say whether this is a failure callback (the message went to the DLQ)."""
        return self.dlq_id is not None

    def json_body(self) -> Any:
        """Return the endpoint's response body parsed as JSON, or None if it is not JSON."""
        return _json_or_none(self.body)

    def json_source_body(self) -> Any:
        """Return the original message body parsed as JSON, or None if it is not JSON."""
        return _json_or_none(self.source_body)

    def to_wire(self) -> dict[str, Any]:
        """Return the JSON object QStash posts for this callback (what ``parse_callback`` reads).

        Optional fields that are None are left out, as QStash leaves out ``dlqId`` from
        callbacks about attempts that did not end in the DLQ.
        """
        data: dict[str, Any] = CallbackSchema().dump(self)
        return {name: value for name, value in data.items() if value is not None}


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        return None


class CallbackSchema(Schema):
    """Load QStash's callback JSON into a ``Callback``."""

    class Meta:
        unknown = EXCLUDE

    status = fields.Integer(required=True)
    body = Base64Bytes(load_default=b"")
    retried = fields.Integer(load_default=0)
    max_retries = fields.Integer(data_key="maxRetries", load_default=None, allow_none=True)
    source_message_id = fields.String(
        data_key="sourceMessageId", load_default=None, allow_none=True
    )
    url = fields.String(load_default=None, allow_none=True)
    method = fields.String(load_default=None, allow_none=True)
    source_body = Base64Bytes(data_key="sourceBody", load_default=b"")
    header = fields.Dict(
        keys=fields.String(), values=fields.List(fields.String()), load_default=dict
    )
    source_header = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        data_key="sourceHeader",
        load_default=dict,
    )
    topic_name = fields.String(data_key="topicName", load_default=None, allow_none=True)
    endpoint_name = fields.String(data_key="endpointName", load_default=None, allow_none=True)
    schedule_id = fields.String(data_key="scheduleId", load_default=None, allow_none=True)
    caller_ip = fields.String(data_key="callerIP", load_default=None, allow_none=True)
    not_before = fields.Integer(data_key="notBefore", load_default=None, allow_none=True)
    created_at = fields.Integer(data_key="createdAt", load_default=None, allow_none=True)
    dlq_id = fields.String(data_key="dlqId", load_default=None, allow_none=True)
    error = fields.String(load_default=None, allow_none=True)

    @post_load
    def make_callback(self, data: dict[str, Any], **kwargs: Any) -> Callback:
        """Build the typed ``Callback``."""
        return Callback(**data)


def parse_callback(data: Mapping[str, Any]) -> Callback:
    """Decode a callback body (already JSON-parsed); raise ``ValidationError`` if malformed."""
    result: Callback = CallbackSchema().load(data)
    return result
