"""Wire format: each client call sends the method, path, headers and body QStash specifies."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.qstash.client import FlowControl, Message, PublishOptions, QStash, QStashError
from tests.client.fake_qstash import TOKEN, FakeQStash

DEST = "https://jobs.example.com/api/jobs/send-email"
JSON = {"content-type": "application/json"}

# (call, method, path, Upstash-* and Content-Type headers, body)
WIRE: dict[str, tuple[Callable[[QStash], Any], str, str, dict[str, str], Any]] = {
    "publish bytes": (
        lambda q: q.publish(DEST, b"raw \x00 bytes", content_type="application/octet-stream"),
        "POST", f"/v2/publish/{DEST}", {"content-type": "application/octet-stream"},
        b"raw \x00 bytes",
    ),
    "publish json": (
        lambda q: q.publish_json(DEST, {"to": "a@b.c", "n": [1, 2]}),
        "POST", f"/v2/publish/{DEST}", JSON, {"to": "a@b.c", "n": [1, 2]},
    ),
    "publish to a url group": (
        lambda q: q.publish("my-group", "hello"),
        "POST", "/v2/publish/my-group", {}, b"hello",
    ),
    "every publish option": (
        lambda q: q.publish_json(
            DEST, {}, method="PUT", delay="1d10h30m", retries=5,
            retry_delay="max(1000, pow(2, retried) * 1000)", callback="https://cb.example/ok",
            failure_callback="https://cb.example/failed", deduplication_id="order-42",
            headers={"X-Tenant": "acme"}, timeout=30, label="billing",
            flow_control=FlowControl("tenant-acme", parallelism=5, rate=10, period="1m"),
        ),
        "POST", f"/v2/publish/{DEST}",
        {**JSON, "upstash-method": "PUT", "upstash-delay": "1d10h30m", "upstash-retries": "5",
         "upstash-retry-delay": "max(1000, pow(2, retried) * 1000)",
         "upstash-callback": "https://cb.example/ok",
         "upstash-failure-callback": "https://cb.example/failed",
         "upstash-deduplication-id": "order-42", "upstash-forward-x-tenant": "acme",
         "upstash-timeout": "30s", "upstash-label": "billing",
         "upstash-flow-control-key": "tenant-acme",
         "upstash-flow-control-value": "parallelism=5, rate=10, period=1m"},
        {},
    ),
    "delay as timedelta, not_before as datetime": (
        lambda q: q.publish_json(
            DEST, 1, delay=timedelta(minutes=5), not_before=datetime(2030, 1, 1, tzinfo=UTC)
        ),
        "POST", f"/v2/publish/{DEST}",
        {**JSON, "upstash-delay": "300s", "upstash-not-before": "1893456000"}, 1,
    ),
    "content-based deduplication": (
        lambda q: q.publish_json(DEST, 1, content_based_deduplication=True),
        "POST", f"/v2/publish/{DEST}", {**JSON, "upstash-content-based-deduplication": "true"}, 1,
    ),
    "enqueue": (
        lambda q: q.enqueue_json("images", DEST, {"fileKey": "a.png"}, retries=0),
        "POST", f"/v2/enqueue/images/{DEST}", {**JSON, "upstash-retries": "0"},
        {"fileKey": "a.png"},
    ),
    "batch": (
        lambda q: q.batch([
            Message(DEST, b'{"a":1}', PublishOptions(content_type="application/json",
                                                    retry_delay="1000")),
            Message(DEST, b"x", PublishOptions(delay=10), queue="images"),
        ]),
        "POST", "/v2/batch", JSON,
        [{"destination": DEST, "body": '{"a":1}',
          "headers": {"Content-Type": "application/json", "Upstash-Retry-Delay": "1000"}},
         {"destination": DEST, "body": "x", "headers": {"Upstash-Delay": "10s"},
          "queue": "images"}],
    ),
    "get message": (lambda q: q.get_message("msg_1"), "GET", "/v2/messages/msg_1", {}, b""),
    "cancel message": (
        lambda q: q.cancel_message("msg_1"), "DELETE", "/v2/messages/msg_1", {}, b"",
    ),
    "cancel messages": (
        lambda q: q.cancel_messages(["msg_1", "msg_2"]),
        "DELETE", "/v2/messages", JSON, {"messageIds": ["msg_1", "msg_2"]},
    ),
    "create schedule": (
        lambda q: q.create_schedule(
            DEST, "CRON_TZ=Europe/Berlin 0 9 * * 1-5", schedule_id="app-daily", body="{}",
            content_type="application/json", retries=2, callback="https://cb.example/ok",
            timeout="2m", queue="reports",
        ),
        "POST", f"/v2/schedules/{DEST}",
        {**JSON, "upstash-cron": "CRON_TZ=Europe/Berlin 0 9 * * 1-5",
         "upstash-schedule-id": "app-daily", "upstash-retries": "2",
         "upstash-callback": "https://cb.example/ok", "upstash-timeout": "2m",
         "upstash-queue-name": "reports"},
        {},
    ),
    "get schedule": (lambda q: q.get_schedule("s1"), "GET", "/v2/schedules/s1", {}, b""),
    "list schedules": (lambda q: q.list_schedules(), "GET", "/v2/schedules", {}, b""),
    "delete schedule": (
        lambda q: q.delete_schedule("s1"), "DELETE", "/v2/schedules/s1", {}, b"",
    ),
    "pause schedule": (
        lambda q: q.pause_schedule("s1"), "POST", "/v2/schedules/s1/pause", {}, b"",
    ),
    "resume schedule": (
        lambda q: q.resume_schedule("s1"), "POST", "/v2/schedules/s1/resume", {}, b"",
    ),
    "upsert queue": (
        lambda q: q.upsert_queue("images", parallelism=3),
        "POST", "/v2/queues", JSON, {"queueName": "images", "parallelism": 3},
    ),
    "get queue": (lambda q: q.get_queue("images"), "GET", "/v2/queues/images", {}, b""),
    "list queues": (lambda q: q.list_queues(), "GET", "/v2/queues", {}, b""),
    "delete queue": (lambda q: q.delete_queue("images"), "DELETE", "/v2/queues/images", {}, b""),
    "pause queue": (lambda q: q.pause_queue("images"), "POST", "/v2/queues/images/pause", {}, b""),
    "resume queue": (
        lambda q: q.resume_queue("images"), "POST", "/v2/queues/images/resume", {}, b"",
    ),
    "list dlq": (lambda q: q.list_dlq(count=5), "GET", "/v2/dlq", {}, b""),
    "get dlq message": (lambda q: q.get_dlq("d1"), "GET", "/v2/dlq/d1", {}, b""),
    "delete dlq message": (lambda q: q.delete_dlq("d1"), "DELETE", "/v2/dlq/d1", {}, b""),
    "delete dlq messages": (
        lambda q: q.delete_dlq_many(["d1", "d2"]), "DELETE", "/v2/dlq", JSON,
        {"dlqIds": ["d1", "d2"]},
    ),
    "retry dlq message": (
        lambda q: q.retry_dlq("d1", retries=0), "POST", "/v2/dlq/retry/d1",
        {"upstash-retries": "0"}, b"",
    ),
    "signing keys": (lambda q: q.signing_keys(), "GET", "/v2/keys", {}, b""),
}  # fmt: skip


def _seed(fake: FakeQStash) -> None:
    fake.state.messages["msg_1"] = {"messageId": "msg_1", "url": DEST}
    fake.state.messages["msg_2"] = {"messageId": "msg_2", "url": DEST}
    fake.add_schedule("s1", DEST, "0 9 * * *")
    fake.state.queues["images"] = {"name": "images", "parallelism": 1, "paused": False}
    for dlq_id in ("d1", "d2"):
        fake.state.dlq[dlq_id] = {"dlqId": dlq_id, "messageId": "m", "url": DEST, "body": ""}


@pytest.mark.parametrize("case", list(WIRE))
def test_request_on_the_wire(case: str, fake: FakeQStash, qstash: QStash) -> None:
    """The call sends exactly QStash's method, path, Upstash headers and body, with the token."""
    call, method, path, headers, body = WIRE[case]
    _seed(fake)
    call(qstash)
    sent = fake.last()
    assert (sent.method, sent.path) == (method, path)
    assert sent.upstash == headers
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert (sent.body if isinstance(body, bytes) else sent.json()) == body


def test_dlq_list_sends_count_and_filters(fake: FakeQStash, qstash: QStash) -> None:
    """DLQ listing passes cursor, count and filters as query parameters."""
    qstash.list_dlq(cursor="c1", count=5, queueName="images")
    assert fake.last().query == {"cursor": ["c1"], "count": ["5"], "queueName": ["images"]}


def test_publish_answer_is_parsed(fake: FakeQStash, qstash: QStash) -> None:
    """A publish returns QStash's message id, and a duplicate says it was deduplicated."""
    first = qstash.publish_json(DEST, 1, deduplication_id="same")
    second = qstash.publish_json(DEST, 1, deduplication_id="same")
    assert first.message_id == second.message_id
    assert (first.deduplicated, second.deduplicated) == (False, True)


def test_ids_are_escaped_in_paths(fake: FakeQStash, qstash: QStash) -> None:
    """An id that would change the path it is sent to is refused before sending."""
    with pytest.raises(ValueError, match="without '/'"):
        qstash.delete_schedule("../queues/images")
    assert fake.requests == []


def test_automatic_deduplication_id_is_sent(
    fake: FakeQStash, make_client: Callable[..., QStash]
) -> None:
    """By default every publish carries a fresh deduplication id, distinct per message."""
    client = make_client()
    client.publish_json(DEST, 1)
    client.batch([Message(DEST, b"1"), Message(DEST, b"2")])
    single = fake.requests[0].headers["upstash-deduplication-id"]
    batched = [entry["headers"]["Upstash-Deduplication-Id"] for entry in fake.last().json()]
    assert len({single, *batched}) == 3


def test_content_based_deduplication_gets_no_generated_id(
    fake: FakeQStash, make_client: Callable[..., QStash]
) -> None:
    """Asking for content-based deduplication leaves the id to QStash."""
    make_client().publish_json(DEST, 1, content_based_deduplication=True)
    assert "upstash-deduplication-id" not in fake.last().headers


def test_url_group_answer_lists_each_endpoint(fake: FakeQStash, qstash: QStash) -> None:
    """A URL group publish returns one result per endpoint, the first one's id on top."""
    result = qstash.publish("my-group", "hi")
    assert [e.url for e in result.endpoints] == [
        "https://my-group.example/1",
        "https://my-group.example/2",
    ]
    assert result.message_id == result.endpoints[0].message_id


def test_answer_without_message_id_is_a_qstash_error(fake: FakeQStash, qstash: QStash) -> None:
    """An answer the client cannot read is a QStashError, not a KeyError."""
    fake.fail_next(200, error="not a publish answer")
    with pytest.raises(QStashError, match="no messageId"):
        qstash.publish_json(DEST, 1)


NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("status", [200, 400, 500])
def test_a_deeply_nested_answer_is_a_qstash_error(status: int) -> None:
    """An answer nested past Python's recursion limit is a QStashError, never RecursionError."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=NESTED, headers=JSON)

    qstash = QStash(TOKEN, transport=httpx.MockTransport(answer), retries=0)
    with pytest.raises(QStashError):
        qstash.publish_json(DEST, 1)
