"""Fixtures for the publishing side: a fake QStash on 127.0.0.1, clients, an app of jobs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from marshmallow import Schema, fields

from app import create_app
from app.delivery import Delivery
from app.errors import NonRetryableError, RetryLater
from app.jobs import JobRegistry
from app.publishing.client import EXTENSION
from app.qstash.client import QStash
from tests.client.fake_qstash import TOKEN, FakeQStash, running
from tests.conftest import TEST_CONFIG, Calls

PREFIX = "test-app-"


class EmailSchema(Schema):
    to = fields.Email(required=True)
    template = fields.String(required=True)
    data = fields.Dict(load_default=dict)


class ImageSchema(Schema):
    file_key = fields.String(required=True, data_key="fileKey")


class DigestSchema(Schema):
    day = fields.String(load_default="today")


def publishing_registry(calls: Calls) -> JobRegistry:
    """Return jobs shaped like the project's: defaults, a queue, callbacks, crons."""
    registry = JobRegistry()

    @registry.job(
        "send-email",
        schema=EmailSchema,
        retries=5,
        retry_delay="pow(2, retried) * 1000",
        timeout="30s",
    )
    def send_email(payload: dict[str, Any], delivery: Delivery) -> dict[str, str]:
        """Render a template and send it."""
        calls.record("send-email", payload, delivery)
        return {"sent": payload["to"]}

    @registry.job("process-image", schema=ImageSchema, queue="images", parallelism=3)
    def process_image(payload: dict[str, Any], delivery: Delivery) -> None:
        calls.record("process-image", payload, delivery)

    @registry.job("deliver-webhook", retries=1, failure_callback="webhook-failed")
    def deliver_webhook(payload: Any, delivery: Delivery) -> None:
        calls.record("deliver-webhook", payload, delivery)
        if payload.get("fail"):
            raise RuntimeError("receiver answered 500")
        if payload.get("gone"):
            raise NonRetryableError("receiver is gone")

    @registry.job("webhook-failed")
    def webhook_failed(payload: Any, delivery: Delivery) -> None:
        calls.record("webhook-failed", payload, delivery)

    @registry.job("poll-upstream")
    def poll_upstream(payload: Any, delivery: Delivery) -> None:
        calls.record("poll-upstream", payload, delivery)
        if delivery.retried == 0:
            raise RetryLater("upstream is rate limited", after=90)

    @registry.cron("daily-digest", cron="0 9 * * *", schema=DigestSchema, retries=2)
    def daily_digest(payload: Any, delivery: Delivery) -> None:
        calls.record("daily-digest", payload, delivery)

    @registry.cron(
        "weekly-report", cron="CRON_TZ=Europe/Berlin 0 8 * * 1", callback="webhook-failed"
    )
    def weekly_report(payload: Any, delivery: Delivery) -> None:
        calls.record("weekly-report", payload, delivery)

    return registry


@pytest.fixture
def fake() -> Iterator[FakeQStash]:
    with running() as server:
        yield server


@pytest.fixture
def qstash(fake: FakeQStash) -> Iterator[QStash]:
    """Our client against the fake, without automatic deduplication ids (exact headers)."""
    client = QStash(TOKEN, base_url=fake.url, auto_deduplication=False, backoff=0.01)
    yield client
    client.close()


@pytest.fixture
def make_client(fake: FakeQStash) -> Iterator[Callable[..., QStash]]:
    """Build clients against the fake (or another ``base_url``); close them all after."""
    made: list[QStash] = []

    def make(**options: Any) -> QStash:
        options = {"base_url": fake.url, "backoff": 0.01, **options}
        client = QStash(options.pop("token", TOKEN), **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def app(calls: Calls, fake: FakeQStash) -> Iterator[Flask]:
    """An app of publishing jobs whose QStash is the fake; its client is closed after."""
    config = {
        **TEST_CONFIG,
        "QSTASH_URL": fake.url,
        "QSTASH_TOKEN": TOKEN,
        "QSTASH_SCHEDULE_PREFIX": PREFIX,
    }
    app = create_app(config, registry=publishing_registry(calls))
    yield app
    client = app.extensions.get(EXTENSION)
    if isinstance(client, QStash):
        client.close()
