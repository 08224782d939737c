"""Publishing and the job modules together, through the stub queue and signed deliveries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from app.testing import StubQueue
from jobs import webhook
from jobs.email import send_email
from jobs.webhook import WebhookFailure, deliver_webhook


@pytest.fixture
def failures() -> Iterator[list[WebhookFailure]]:
    seen: list[WebhookFailure] = []
    webhook.on_webhook_failure(seen.append)
    yield seen
    webhook.failure_hooks.remove(seen.append)


def test_refused_webhook_reaches_the_failure_callback(
    app: Flask, failures: list[WebhookFailure]
) -> None:
    """deliver_webhook.enqueue names webhook-failed as failure callback, which decodes it."""
    queue = StubQueue.install(app)
    with app.app_context():
        deliver_webhook.enqueue(
            {
                "webhookId": "wh_42",
                "eventType": "invoice.paid",
                "payload": {"id": 1},
                "targetUrl": "http://169.254.169.254/latest/meta-data",
                "secret": "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0",
            }
        )
    [message] = queue.published("deliver-webhook")
    assert message.options.failure_callback == "https://jobs.example.com/api/jobs/webhook-failed"
    queue.drain()
    [failure] = failures
    assert failure.webhook_id == "wh_42"
    assert failure.target_url == "http://169.254.169.254/latest/meta-data"
    assert len(queue.dead_letters) == 1


def test_enqueued_email_lands_in_the_outbox(app: Flask, tmp_path: Path) -> None:
    """send_email.enqueue + drain renders the template and writes one .eml per message."""
    queue = StubQueue.install(app)
    with app.app_context():
        message_id = send_email.enqueue(
            {
                "to": "ada@example.com",
                "template": "welcome",
                "data": {"name": "Ada", "loginUrl": "https://example.com/login"},
            },
            delay="10m",
        )
    queue.drain(fail_fast=True)
    outbox = Path(app.instance_path) / "outbox"
    [eml] = list(outbox.glob("*.eml"))
    assert message_id in eml.name
    assert "Ada" in eml.read_text()
