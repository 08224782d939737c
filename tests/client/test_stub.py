"""The in-memory stub queue: records publishes and drains them into the app, signed."""

from __future__ import annotations

import base64
import json

import pytest
from flask import Flask

from app.jobs import Job, JobRegistry
from app.testing import StubQueue
from tests.client.fake_qstash import FakeQStash
from tests.conftest import APP_URL, Calls

EMAIL = {"to": "a@example.com", "template": "welcome"}


def _job(app: Flask, name: str) -> Job:
    registry: JobRegistry = app.extensions["qstash_jobs"]
    return registry[name]


@pytest.fixture
def stub(app: Flask) -> StubQueue:
    return StubQueue.install(app)


def test_publishes_are_recorded_with_their_options(
    app: Flask, stub: StubQueue, fake: FakeQStash
) -> None:
    """enqueue goes to the stub, which keeps the payload and every option; QStash sees nothing."""
    with app.app_context():
        message_id = _job(app, "send-email").enqueue(EMAIL, delay="10m", label="signup")
    [published] = stub.published("send-email")
    assert published.message_id == message_id
    assert published.payload == EMAIL
    assert (published.options.delay, published.options.label) == ("10m", "signup")
    assert published.options.retries == 5
    assert fake.requests == []


def test_drain_delivers_through_the_signed_endpoint(
    app: Flask, stub: StubQueue, calls: Calls
) -> None:
    """Draining runs the handler behind with_qstash, with the schema-loaded payload."""
    with app.app_context():
        message_id = _job(app, "process-image").enqueue({"fileKey": "a.png"})
    settled = stub.drain()
    assert [entry.state for entry in settled] == ["delivered"]
    [(job, payload, delivery)] = calls.items
    assert (job, payload) == ("process-image", {"file_key": "a.png"})
    assert delivery.message_id == message_id and delivery.verified


def test_delays_are_honoured_in_order(app: Flask, stub: StubQueue, calls: Calls) -> None:
    """A delayed message is delivered after one due earlier, without waiting in real time."""
    job = _job(app, "send-email")
    with app.app_context():
        job.enqueue({**EMAIL, "to": "late@example.com"}, delay="1h")
        job.enqueue({**EMAIL, "to": "later@example.com"}, delay="2h")
        job.enqueue({**EMAIL, "to": "now@example.com"})
    stub.drain()
    assert [payload["to"] for _, payload, _ in calls.items] == [
        "now@example.com",
        "late@example.com",
        "later@example.com",
    ]


def test_failures_are_retried_up_to_the_jobs_retries(
    app: Flask, stub: StubQueue, calls: Calls
) -> None:
    """A failing handler is delivered 1 + retries times with Upstash-Retried counting up."""
    with app.app_context():
        _job(app, "deliver-webhook").enqueue({"fail": True})
    stub.drain()
    attempts = [d.retried for job, _, d in calls.items if job == "deliver-webhook"]
    assert attempts == [0, 1]
    [dead] = stub.dead_letters
    assert dead.statuses == [500, 500]


def test_failure_callback_reaches_the_callback_job(
    app: Flask, stub: StubQueue, calls: Calls
) -> None:
    """When retries run out, the failure-callback job gets QStash's callback body."""
    with app.app_context():
        message_id = _job(app, "deliver-webhook").enqueue({"fail": True})
    stub.drain()
    [(_, body, _)] = [call for call in calls.items if call[0] == "webhook-failed"]
    assert body["sourceMessageId"] == message_id
    assert body["status"] == 500
    assert (body["retried"], body["maxRetries"]) == (1, 1)
    assert json.loads(base64.b64decode(body["sourceBody"])) == {"fail": True}
    assert body["dlqId"]


def test_non_retryable_answer_goes_to_dead_letters_at_once(
    app: Flask, stub: StubQueue, calls: Calls
) -> None:
    """A 489 answer is not retried."""
    with app.app_context():
        _job(app, "deliver-webhook").enqueue({"gone": True})
    stub.drain()
    assert [entry.statuses for entry in stub.dead_letters] == [[489]]


def test_fail_fast_reraises_the_handlers_own_exception(app: Flask, stub: StubQueue) -> None:
    """drain(fail_fast=True) raises the exception the handler raised, not a status code."""
    with app.app_context():
        _job(app, "deliver-webhook").enqueue({"fail": True})
    with pytest.raises(RuntimeError, match="receiver answered 500"):
        stub.drain(fail_fast=True)


def test_deduplication_id_is_honoured(app: Flask, stub: StubQueue) -> None:
    """A second publish with the same deduplication id returns the first id and adds nothing."""
    job = _job(app, "webhook-failed")
    with app.app_context():
        first = job.enqueue({}, deduplication_id="once")
        second = job.enqueue({}, deduplication_id="once")
    assert first == second
    assert len(stub.messages) == 1


def test_enqueue_many_is_recorded_per_message(app: Flask, stub: StubQueue) -> None:
    """A batch records one message per payload."""
    with app.app_context():
        ids = _job(app, "webhook-failed").enqueue_many([{"n": 1}, {"n": 2}])
    assert [entry.message_id for entry in stub.published("webhook-failed")] == ids


def test_foreign_destination_cannot_be_drained(app: Flask, stub: StubQueue) -> None:
    """The stub only delivers to this app's jobs and says so."""
    with app.app_context():
        _job(app, "webhook-failed").enqueue({}, app_url="https://elsewhere.example")
    with pytest.raises(ValueError, match=f"only to this app's jobs \\({APP_URL}"):
        stub.drain()


def test_retry_later_is_honoured_on_the_virtual_clock(
    app: Flask, stub: StubQueue, calls: Calls
) -> None:
    """A 503 with Retry-After: 90 is retried 90 seconds (of stub time) later."""
    with app.app_context():
        _job(app, "poll-upstream").enqueue({})
    start = stub.clock
    [entry] = stub.drain()
    assert entry.statuses == [503, 200]
    assert stub.clock - start == pytest.approx(90)
    assert [d.retried for _, _, d in calls.items] == [0, 1]


def test_callback_fires_after_each_attempt(app: Flask, stub: StubQueue, calls: Calls) -> None:
    """A job declared with a callback makes the stub post QStash's callback body to it."""
    with app.app_context():
        message_id = _job(app, "weekly-report").enqueue({})
    stub.drain()
    [(_, body, _)] = [call for call in calls.items if call[0] == "webhook-failed"]
    assert (body["status"], body["sourceMessageId"]) == (200, message_id)
    assert "dlqId" not in body
