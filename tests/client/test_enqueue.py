"""Job.enqueue, enqueue_many and schedule_at: validate first, publish with the defaults."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from flask import Flask
from marshmallow import ValidationError

from app.errors import ConfigurationError
from app.jobs import Job, JobRegistry
from app.publishing import client_for
from app.qstash.client import QStash
from tests.client.fake_qstash import FakeQStash
from tests.conftest import APP_URL

EMAIL = {"to": "a@example.com", "template": "welcome"}


def _job(app: Flask, name: str) -> Job:
    registry: JobRegistry = app.extensions["qstash_jobs"]
    return registry[name]


def test_enqueue_publishes_to_the_jobs_url_with_its_defaults(app: Flask, fake: FakeQStash) -> None:
    """The message goes to APP_URL + the job's path with its declared retries and timeout."""
    with app.app_context():
        message_id = _job(app, "send-email").enqueue(EMAIL, delay="10m")
    sent = fake.last()
    assert sent.path == f"/v2/publish/{APP_URL}/api/jobs/send-email"
    assert sent.json() == EMAIL
    assert {k: v for k, v in sent.upstash.items() if k != "upstash-deduplication-id"} == {
        "content-type": "application/json",
        "upstash-retries": "5",
        "upstash-retry-delay": "pow(2, retried) * 1000",
        "upstash-timeout": "30s",
        "upstash-delay": "10m",
    }
    assert message_id in fake.state.messages


def test_call_options_override_job_defaults(app: Flask, fake: FakeQStash) -> None:
    """An option given to enqueue wins over the job's declaration."""
    with app.app_context():
        _job(app, "send-email").enqueue(EMAIL, retries=0, timeout=None, deduplication_id="d1")
    headers = fake.last().upstash
    assert headers["upstash-retries"] == "0"
    assert headers["upstash-deduplication-id"] == "d1"
    assert "upstash-timeout" not in headers


def test_invalid_payload_is_refused_before_publishing(app: Flask, fake: FakeQStash) -> None:
    """A payload the job's schema rejects raises ValidationError and never reaches QStash."""
    with app.app_context(), pytest.raises(ValidationError) as caught:
        _job(app, "send-email").enqueue({"to": "not-an-email"})
    assert set(caught.value.messages) == {"to", "template"}  # type: ignore[arg-type]
    assert fake.requests == []


def test_job_queue_is_used(app: Flask, fake: FakeQStash) -> None:
    """A job declared with a queue publishes through /v2/enqueue/<queue>/."""
    with app.app_context():
        _job(app, "process-image").enqueue({"fileKey": "a.png"})
    assert fake.last().path == f"/v2/enqueue/images/{APP_URL}/api/jobs/process-image"


def test_queue_none_publishes_around_the_jobs_queue(app: Flask, fake: FakeQStash) -> None:
    """queue=None overrides the job's queue and publishes directly."""
    with app.app_context():
        _job(app, "process-image").enqueue({"fileKey": "a.png"}, queue=None)
    assert fake.last().path.startswith("/v2/publish/")


def test_failure_callback_job_name_becomes_its_url(app: Flask, fake: FakeQStash) -> None:
    """A failure callback naming a job is sent as APP_URL + that job's path."""
    with app.app_context():
        _job(app, "deliver-webhook").enqueue({"url": "https://x.example"})
    expected = f"{APP_URL}/api/jobs/webhook-failed"
    assert fake.last().headers["upstash-failure-callback"] == expected


def test_callback_url_is_kept(app: Flask, fake: FakeQStash) -> None:
    """A callback given as an absolute URL is sent unchanged."""
    with app.app_context():
        _job(app, "deliver-webhook").enqueue({}, callback="https://hooks.example/cb")
    assert fake.last().headers["upstash-callback"] == "https://hooks.example/cb"


def test_unknown_callback_job_is_refused(app: Flask, fake: FakeQStash) -> None:
    """A callback that is neither a URL nor a registered job is a ValueError."""
    with app.app_context(), pytest.raises(ValueError, match="no-such-job"):
        _job(app, "deliver-webhook").enqueue({}, callback="no-such-job")
    assert fake.requests == []


def test_enqueue_many_is_one_batch_call(app: Flask, fake: FakeQStash) -> None:
    """Several payloads go out in one /v2/batch call and return one id each."""
    payloads = [{**EMAIL, "to": f"u{n}@example.com"} for n in range(3)]
    with app.app_context():
        ids = _job(app, "send-email").enqueue_many(payloads)
    assert [req.path for req in fake.requests] == ["/v2/batch"]
    assert [entry["headers"]["Upstash-Retries"] for entry in fake.last().json()] == ["5"] * 3
    assert sorted(ids) == sorted(fake.state.messages)


def test_enqueue_many_validates_all_before_sending_any(app: Flask, fake: FakeQStash) -> None:
    """One bad payload in a batch means none of them is published."""
    with app.app_context(), pytest.raises(ValidationError):
        _job(app, "send-email").enqueue_many([EMAIL, {"to": "x"}])
    assert fake.requests == []


def test_schedule_at_sets_not_before(app: Flask, fake: FakeQStash) -> None:
    """schedule_at publishes with Upstash-Not-Before in unix seconds."""
    with app.app_context():
        _job(app, "send-email").schedule_at(datetime(2030, 1, 1, tzinfo=UTC), EMAIL)
    assert fake.last().headers["upstash-not-before"] == "1893456000"


def test_explicit_client_and_app_url_work_without_flask(
    app: Flask, fake: FakeQStash, make_client: Callable[..., QStash]
) -> None:
    """Outside an app context, client= and app_url= are enough to publish."""
    job = _job(app, "webhook-failed")
    job.enqueue({}, client=make_client(), app_url="https://other.example")
    assert fake.last().path == "/v2/publish/https://other.example/api/jobs/webhook-failed"


def test_enqueue_outside_app_context_says_what_is_missing(app: Flask) -> None:
    """Without an app context or a client, the error says how to provide one."""
    with pytest.raises(ConfigurationError, match="app context"):
        _job(app, "webhook-failed").enqueue({}, app_url="https://x.example")


def test_missing_token_is_a_configuration_error(app: Flask) -> None:
    """Publishing without QSTASH_TOKEN names the missing setting."""
    app.config["QSTASH_TOKEN"] = None
    with app.app_context(), pytest.raises(ConfigurationError, match="QSTASH_TOKEN"):
        _job(app, "webhook-failed").enqueue({})


def test_one_client_per_app(app: Flask) -> None:
    """The app's client is created once and reused."""
    assert client_for(app) is client_for(app)
    client_for(app).close()
