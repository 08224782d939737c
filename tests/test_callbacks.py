"""The callback body: one wire format, encoded by the dev server and stub, decoded by jobs."""

from __future__ import annotations

import base64

from app.qstash.callbacks import Callback, parse_callback


def test_to_wire_round_trips_through_the_parser() -> None:
    """A Callback encoded with to_wire decodes back to the same Callback."""
    callback = Callback(
        status=489,
        header={"Content-Type": ["application/json"]},
        body=b'{"code":"non_retryable"}',
        retried=0,
        max_retries=3,
        source_message_id="msg_1",
        url="https://jobs.example.com/api/jobs/x",
        method="POST",
        source_header={"Upstash-Retried": ["0"]},
        source_body=b"\x00\xffbinary",
        dlq_id="dlq_1",
    )
    wire = callback.to_wire()
    assert wire["body"] == base64.b64encode(b'{"code":"non_retryable"}').decode()
    assert wire["maxRetries"] == 3 and wire["sourceMessageId"] == "msg_1"
    assert parse_callback(wire) == callback


def test_attempt_callbacks_leave_out_dlq_id() -> None:
    """A callback about an attempt carries no dlqId key, as QStash's."""
    wire = Callback(
        status=200, body=b"", retried=1, max_retries=3, source_message_id="m",
        url=None, method="POST", source_body=b"",
    ).to_wire()  # fmt: skip
    assert "dlqId" not in wire and "url" not in wire
    assert parse_callback(wire).is_failure is False
