"""The official PyPI ``qstash`` SDK against the dev server: an independent oracle."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from qstash import QStash, Receiver
from werkzeug.wrappers import Response

from app.devserver import DevServer
from tests.devserver.endpoint import Endpoint

HOLD = "1d"


@pytest.fixture
def sdk(dev_server: DevServer) -> Iterator[QStash]:
    yield QStash(dev_server.token, base_url=dev_server.url, retry=False)


def test_publish_json_is_delivered_and_verified_by_the_official_receiver(
    sdk: QStash, endpoint: Endpoint, dev_server: DevServer
) -> None:
    """A message published with the SDK arrives signed so that qstash.Receiver accepts it."""
    url = endpoint.url("/sdk/publish?tenant=7")
    result = sdk.message.publish_json(url=url, body={"hello": "world"}, headers={"X-A": "1"})
    got = endpoint.wait_for("/sdk/publish", 1)[0]
    receiver = Receiver(
        current_signing_key=dev_server.current_key, next_signing_key=dev_server.next_key
    )
    receiver.verify(signature=got.headers["Upstash-Signature"], body=got.body.decode(), url=url)
    assert got.headers["Upstash-Message-Id"] == result.message_id  # type: ignore[union-attr]
    assert got.headers["X-A"] == "1"


def test_official_receiver_rejects_a_tampered_body(
    endpoint: Endpoint, sdk: QStash, dev_server: DevServer
) -> None:
    """The same signature does not verify another body (the oracle is not vacuous)."""
    from qstash.errors import SignatureError

    url = endpoint.url("/sdk/tamper")
    sdk.message.publish_json(url=url, body={"amount": 1})
    got = endpoint.wait_for("/sdk/tamper", 1)[0]
    receiver = Receiver(
        current_signing_key=dev_server.current_key, next_signing_key=dev_server.next_key
    )
    with pytest.raises(SignatureError):
        receiver.verify(signature=got.headers["Upstash-Signature"], body='{"amount": 100}', url=url)


def test_batch_json_delivers_every_message(sdk: QStash, endpoint: Endpoint) -> None:
    """batch_json returns one id per message and each is delivered with its body."""
    answers = sdk.message.batch_json(
        [{"url": endpoint.url("/sdk/batch"), "body": {"n": n}} for n in range(3)]
    )
    ids = {answer.message_id for answer in answers}  # type: ignore[union-attr]
    got = endpoint.wait_for("/sdk/batch", 3)
    assert {r.headers["Upstash-Message-Id"] for r in got} == ids
    assert sorted(r.body for r in got) == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']


def test_message_get_and_cancel(sdk: QStash, endpoint: Endpoint) -> None:
    """A delayed message is readable through the SDK and cancelled by it."""
    result = sdk.message.publish_json(
        url=endpoint.url("/sdk/later"), body={"x": 1}, delay=HOLD, retries=2
    )
    message = sdk.message.get(result.message_id)  # type: ignore[union-attr]
    assert (message.url, message.max_retries, message.body) == (
        endpoint.url("/sdk/later"),
        2,
        '{"x": 1}',
    )
    sdk.message.cancel(message.message_id)
    assert sdk.message.cancel_all() == 0


def test_schedules_lifecycle(sdk: QStash, endpoint: Endpoint) -> None:
    """Schedules are created, read, listed, paused, resumed and deleted through the SDK."""
    schedule_id = sdk.schedule.create_json(
        destination=endpoint.url("/sdk/cron"),
        cron="CRON_TZ=America/New_York 0 9 * * 1-5",
        body={"report": "weekly"},
        retries=1,
    )
    schedule = sdk.schedule.get(schedule_id)
    assert (schedule.cron, schedule.retries, schedule.paused) == (
        "CRON_TZ=America/New_York 0 9 * * 1-5",
        1,
        False,
    )
    sdk.schedule.pause(schedule_id)
    assert sdk.schedule.get(schedule_id).paused is True
    sdk.schedule.resume(schedule_id)
    assert [s.schedule_id for s in sdk.schedule.list()] == [schedule_id]
    sdk.schedule.delete(schedule_id)
    assert sdk.schedule.list() == []


def test_schedule_firing_carries_schedule_id(sdk: QStash, endpoint: Endpoint) -> None:
    """A schedule made with the SDK fires deliveries carrying its id."""
    schedule_id = sdk.schedule.create(destination=endpoint.url("/sdk/tick"), cron="* * * * *")
    got = endpoint.wait_for("/sdk/tick", 1, timeout=3)[0]
    assert got.headers["Upstash-Schedule-Id"] == schedule_id


def test_queues_lifecycle(sdk: QStash, endpoint: Endpoint) -> None:
    """Queues are upserted, listed, paused, resumed and deleted; enqueue goes through them."""
    sdk.queue.upsert("sdk-q", parallelism=2)
    sdk.queue.pause("sdk-q")
    sdk.message.enqueue_json(queue="sdk-q", url=endpoint.url("/sdk/q"), body={"a": 1})
    queue = sdk.queue.get("sdk-q")
    assert (queue.parallelism, queue.paused, queue.lag) == (2, True, 1)
    sdk.queue.resume("sdk-q")
    endpoint.wait_for("/sdk/q", 1)
    assert [q.name for q in sdk.queue.list()] == ["sdk-q"]
    sdk.queue.delete("sdk-q")
    assert sdk.queue.list() == []


def test_dlq_list_get_delete(sdk: QStash, endpoint: Endpoint) -> None:
    """A dead-lettered message is listed, read and deleted through the SDK's DLQ API."""
    endpoint.replies["/sdk/dead"] = lambda request: Response(
        "gone", 489, headers={"Upstash-NonRetryable-Error": "true"}
    )
    result = sdk.message.publish_json(url=endpoint.url("/sdk/dead"), body={"a": 1})
    deadline = time.monotonic() + 5
    while not (listed := sdk.dlq.list().messages) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [m.message_id for m in listed] == [result.message_id]  # type: ignore[union-attr]
    entry = sdk.dlq.get(listed[0].dlq_id)
    assert (entry.response_status, entry.response_body) == (489, "gone")
    sdk.dlq.delete(entry.dlq_id)
    assert sdk.dlq.list().messages == []


def test_several_labels_read_back_and_filter(sdk: QStash, endpoint: Endpoint) -> None:
    """label="a,b" reads back as label "a", and the DLQ list filtered by "b" finds it."""
    held = sdk.message.publish_json(url=endpoint.url("/sdk/held"), body={}, delay=HOLD, label="a,b")
    assert sdk.message.get(held.message_id).label == "a"  # type: ignore[union-attr]
    endpoint.replies["/sdk/labelled"] = lambda request: Response(
        "gone", 489, headers={"Upstash-NonRetryable-Error": "true"}
    )
    dead = sdk.message.publish_json(url=endpoint.url("/sdk/labelled"), body={}, label="a,b")
    deadline = time.monotonic() + 5
    while not (listed := sdk.dlq.list(filter={"label": "b"}).messages):
        assert time.monotonic() < deadline, "the labelled message never reached the DLQ"
        time.sleep(0.02)
    assert [(m.message_id, m.label) for m in listed] == [(dead.message_id, "a")]  # type: ignore[union-attr]


def test_schedule_without_a_body_reads_back_without_one(sdk: QStash) -> None:
    """A schedule created with no body has body None through the SDK, not an empty text."""
    schedule_id = sdk.schedule.create(destination="http://example.com/none", cron="0 9 * * *")
    schedule = sdk.schedule.get(schedule_id)
    assert (schedule.body, schedule.body_base64) == (None, None)


def test_forwarded_framing_headers_leave_a_delivery_the_receiver_accepts(
    sdk: QStash, endpoint: Endpoint, dev_server: DevServer
) -> None:
    """A publisher forwarding its own request's Content-Length, Host and Connection still
    gets the whole body, which qstash.Receiver verifies."""
    url = endpoint.url("/sdk/framed")
    framing = {"Content-Length": "7", "Host": "elsewhere.example", "Connection": "close"}
    sdk.message.publish_json(url=url, body={"hello": "world"}, headers=framing)
    got = endpoint.wait_for("/sdk/framed", 1, timeout=5)[0]
    assert got.body == b'{"hello": "world"}'
    receiver = Receiver(
        current_signing_key=dev_server.current_key, next_signing_key=dev_server.next_key
    )
    receiver.verify(signature=got.headers["Upstash-Signature"], body=got.body.decode(), url=url)
