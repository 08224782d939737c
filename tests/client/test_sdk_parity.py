"""Side by side with the official ``qstash`` SDK: both clients send the same requests.

Each case makes the same call with our client and with ``qstash.QStash`` against the same
local server and compares method, path, ``Upstash-*`` headers and body (JSON bodies are
compared parsed: the SDK writes ``", "`` separators, we write compact JSON). Where the
SDK legitimately differs, the difference itself is asserted in ``KNOWN_DIFFERENCES``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from qstash import QStash as OfficialQStash

from app.qstash.client import FlowControl, QStash, Redact, json_message
from tests.client.fake_qstash import TOKEN, FakeQStash, Recorded

DEST = "https://jobs.example.com/api/jobs/send-email"
OPTIONS: dict[str, Any] = {
    "method": "PUT", "delay": "1d10h30m", "retries": 5, "callback": "https://cb.example/ok",
    "failure_callback": "https://cb.example/failed", "deduplication_id": "order-42",
    "headers": {"X-Tenant": "acme"}, "timeout": 30, "label": "billing",
    "retry_delay": "pow(2, retried) * 1000",
}  # fmt: skip
FLOW = {"key": "tenant-acme", "parallelism": 5, "rate": 10, "period": "1m"}

Ours = Callable[[QStash], Any]
Sdk = Callable[[OfficialQStash], Any]

SAME: dict[str, tuple[Ours, Sdk]] = {
    "publish json with every option": (
        lambda q: q.publish_json(DEST, {"to": "a@b.c"}, not_before=1893456000,
                                 flow_control=FlowControl(**FLOW), **OPTIONS),
        lambda s: s.message.publish_json(url=DEST, body={"to": "a@b.c"}, not_before=1893456000,
                                         flow_control=FLOW, **OPTIONS),
    ),
    "publish raw bytes": (
        lambda q: q.publish(DEST, b"\x00\x01raw", content_type="application/octet-stream"),
        lambda s: s.message.publish(url=DEST, body=b"\x00\x01raw",
                                    content_type="application/octet-stream"),
    ),
    "publish with redact": (
        lambda q: q.publish_json(DEST, {"n": 1}, headers={"Authorization": "Bearer t"},
                                 redact=Redact(body=True, headers=["Authorization"])),
        lambda s: s.message.publish_json(url=DEST, body={"n": 1},
                                         headers={"Authorization": "Bearer t"},
                                         redact={"body": True, "header": ["Authorization"]}),
    ),
    "create schedule redacting every header": (
        lambda q: q.create_schedule(DEST, "0 9 * * *", schedule_id="s-r", body="{}",
                                    redact=Redact(headers=True)),
        lambda s: s.schedule.create(destination=DEST, cron="0 9 * * *", schedule_id="s-r",
                                    body="{}", redact={"header": True}),
    ),
    "publish with integer delay": (
        lambda q: q.publish_json(DEST, [1], delay=90),
        lambda s: s.message.publish_json(url=DEST, body=[1], delay=90),
    ),
    "publish to a url group": (
        lambda q: q.publish("my-group", "hi"),
        lambda s: s.message.publish(url_group="my-group", body="hi"),
    ),
    "enqueue json": (
        lambda q: q.enqueue_json("images", DEST, {"fileKey": "a.png"}, retries=1),
        lambda s: s.message.enqueue_json(queue="images", url=DEST, body={"fileKey": "a.png"},
                                         retries=1),
    ),
    "batch json": (
        lambda q: q.batch([json_message(DEST, {"n": 1}, delay="5m"),
                           json_message(DEST, {"n": 2}, queue="images", retries=2)]),
        lambda s: s.message.batch_json([{"url": DEST, "body": {"n": 1}, "delay": "5m"},
                                        {"url": DEST, "body": {"n": 2}, "queue": "images",
                                         "retries": 2}]),
    ),
    "create schedule": (
        lambda q: q.create_schedule(DEST, "CRON_TZ=Europe/Berlin 0 9 * * 1-5",
                                    schedule_id="app-daily", body="{}", retries=2,
                                    content_type="application/json", timeout=60,
                                    callback="https://cb.example/ok", queue="reports"),
        lambda s: s.schedule.create(destination=DEST, cron="CRON_TZ=Europe/Berlin 0 9 * * 1-5",
                                    schedule_id="app-daily", body="{}", retries=2,
                                    content_type="application/json", timeout=60,
                                    callback="https://cb.example/ok", queue="reports"),
    ),
    "get schedule": (lambda q: q.get_schedule("s1"), lambda s: s.schedule.get("s1")),
    "list schedules": (lambda q: q.list_schedules(), lambda s: s.schedule.list()),
    "delete schedule": (lambda q: q.delete_schedule("s1"), lambda s: s.schedule.delete("s1")),
    "get queue": (lambda q: q.get_queue("images"), lambda s: s.queue.get("images")),
    "list queues": (lambda q: q.list_queues(), lambda s: s.queue.list()),
    "pause queue": (lambda q: q.pause_queue("images"), lambda s: s.queue.pause("images")),
    "resume queue": (lambda q: q.resume_queue("images"), lambda s: s.queue.resume("images")),
    "delete queue": (lambda q: q.delete_queue("images"), lambda s: s.queue.delete("images")),
    "get message": (lambda q: q.get_message("msg_1"), lambda s: s.message.get("msg_1")),
    "cancel message": (lambda q: q.cancel_message("msg_1"), lambda s: s.message.cancel("msg_1")),
    "cancel messages": (
        lambda q: q.cancel_messages(["msg_1", "msg_2"]),
        lambda s: s.message.cancel_many(["msg_1", "msg_2"]),
    ),
    "list dlq": (lambda q: q.list_dlq(count=5), lambda s: s.dlq.list(count=5)),
    "get dlq message": (lambda q: q.get_dlq("d1"), lambda s: s.dlq.get("d1")),
    "delete dlq message": (lambda q: q.delete_dlq("d1"), lambda s: s.dlq.delete("d1")),
    "delete dlq messages": (
        lambda q: q.delete_dlq_many(["d1", "d2"]), lambda s: s.dlq.delete_many(["d1", "d2"]),
    ),
    "signing keys": (lambda q: q.signing_keys(), lambda s: s.signing_key.get()),
}  # fmt: skip


def _sdk_batch_drops_retry_delay(ours: dict[str, Any], sdk: dict[str, Any]) -> None:
    assert ours["body"][0]["headers"]["Upstash-Retry-Delay"] == "1000"
    assert "Upstash-Retry-Delay" not in sdk["body"][0]["headers"]


def _sdk_capitalises_true(ours: dict[str, Any], sdk: dict[str, Any]) -> None:
    assert ours["headers"]["upstash-content-based-deduplication"] == "true"
    assert sdk["headers"]["upstash-content-based-deduplication"] == "True"


def _sdk_patches_schedules(ours: dict[str, Any], sdk: dict[str, Any]) -> None:
    assert (ours["method"], sdk["method"]) == ("POST", "PATCH")  # the REST docs say POST


def _sdk_always_sends_paused(ours: dict[str, Any], sdk: dict[str, Any]) -> None:
    # An upsert with "paused": false would silently resume a paused queue on every sync.
    assert ours["body"] == {"queueName": "images", "parallelism": 3}
    assert sdk["body"] == {"queueName": "images", "parallelism": 3, "paused": False}


KNOWN_DIFFERENCES: dict[str, tuple[Ours, Sdk, Callable[[Any, Any], None]]] = {
    "SDK batch_json drops retry_delay": (
        lambda q: q.batch([json_message(DEST, 1, retry_delay="1000")]),
        lambda s: s.message.batch_json([{"url": DEST, "body": 1, "retry_delay": "1000"}]),
        _sdk_batch_drops_retry_delay,
    ),
    "SDK sends content-based deduplication as 'True'": (
        lambda q: q.publish_json(DEST, 1, content_based_deduplication=True),
        lambda s: s.message.publish_json(url=DEST, body=1, content_based_deduplication=True),
        _sdk_capitalises_true,
    ),
    "SDK pauses schedules with PATCH": (
        lambda q: q.pause_schedule("s1"), lambda s: s.schedule.pause("s1"),
        _sdk_patches_schedules,
    ),
    "SDK resumes schedules with PATCH": (
        lambda q: q.resume_schedule("s1"), lambda s: s.schedule.resume("s1"),
        _sdk_patches_schedules,
    ),
    "SDK queue upsert always sends paused": (
        lambda q: q.upsert_queue("images", parallelism=3),
        lambda s: s.queue.upsert("images", parallelism=3),
        _sdk_always_sends_paused,
    ),
}  # fmt: skip


def _parsed_body(req: Recorded) -> Any:
    if not req.body or "json" not in req.headers.get("content-type", ""):
        return req.body
    data = req.json()
    if req.path == "/v2/batch":  # each entry's JSON body, and the SDK's "queue": null
        for entry in data:
            if "json" in entry["headers"].get("Content-Type", ""):
                entry["body"] = json.loads(entry["body"])
            if entry.get("queue") is None:
                entry.pop("queue", None)
    return data


def _normal(req: Recorded) -> dict[str, Any]:
    return {"method": req.method, "path": req.path, "query": req.query,
            "headers": req.upstash, "body": _parsed_body(req)}  # fmt: skip


@pytest.fixture
def sdk(fake: FakeQStash) -> Iterator[OfficialQStash]:
    client = OfficialQStash(TOKEN, base_url=fake.url, retry=False)
    yield client
    client.http._client.close()  # the SDK has no close(); its pool would leak sockets


def _seed(fake: FakeQStash) -> None:
    message = {"url": DEST, "method": "POST", "maxRetries": 3, "notBefore": 0, "createdAt": 0}
    for message_id in ("msg_1", "msg_2"):
        fake.state.messages[message_id] = {"messageId": message_id, **message}
    fake.add_schedule("s1", DEST, "0 9 * * *")
    fake.state.queues["images"] = {"name": "images", "parallelism": 1, "paused": False,
                                   "lag": 0, "createdAt": 0, "updatedAt": 0}  # fmt: skip
    for dlq_id in ("d1", "d2"):
        fake.state.dlq[dlq_id] = {"dlqId": dlq_id, "messageId": "m", "responseStatus": 500,
                                  **message}  # fmt: skip


def _both(fake: FakeQStash, qstash: QStash, sdk: OfficialQStash, ours: Ours, theirs: Sdk
          ) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    _seed(fake)
    ours(qstash)
    mine = _normal(fake.last())
    _seed(fake)
    with contextlib.suppress(Exception):  # only the request matters (the fake refuses PATCH)
        theirs(sdk)
    return mine, _normal(fake.last())


@pytest.mark.parametrize("case", list(SAME))
def test_same_request_as_official_sdk(
    case: str, fake: FakeQStash, qstash: QStash, sdk: OfficialQStash
) -> None:
    """Our client and the official SDK send the same request for the same call."""
    mine, theirs = _both(fake, qstash, sdk, *SAME[case])
    assert mine == theirs


@pytest.mark.parametrize("case", list(KNOWN_DIFFERENCES))
def test_known_sdk_difference(
    case: str, fake: FakeQStash, qstash: QStash, sdk: OfficialQStash
) -> None:
    """Where the SDK deviates from QStash's reference, we follow the reference."""
    ours, theirs, check = KNOWN_DIFFERENCES[case]
    mine, official = _both(fake, qstash, sdk, ours, theirs)
    check(mine, official)
