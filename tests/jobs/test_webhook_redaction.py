"""Credentials in a webhook's targetUrl are sent, and shown nowhere.

``http://user:secret@host/`` authenticates to the subscriber (Basic auth), but every
answer to QStash, log record, delivery-log row (hence dashboard and digest) and failure
log line carries ``http://***@host/``.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import outbound
from app.qstash.redact import redact_url
from app.store import get_store, queries
from app.testing import DeliveryClient, StubQueue
from jobs import webhook
from jobs.webhook import WebhookFailure, deliver_webhook
from tests.jobs.conftest import make_app
from tests.jobs.recorder import Recorder, Reply, recording_server
from tests.jobs.test_webhook_limits import payload

PASSWORD = "s3cr3t-Pa55"
TOKEN = "tok-9f8e7d6c5b4a"
DASHBOARD_TOKEN = "a-dashboard-token-of-some-length"


@pytest.fixture
def receiver() -> Iterator[Recorder]:
    with recording_server() as recorder:
        yield recorder


@pytest.fixture
def app(job_config: dict[str, Any], tmp_path: Path) -> Iterator[Flask]:
    """The app with its delivery log and dashboard on SQLite, loopback opened on purpose."""
    config = {
        **job_config,
        "WEBHOOK_ALLOWED_NETWORKS": ["127.0.0.1/32"],
        "WEBHOOK_TIMEOUT": 1.0,
        "WEBHOOK_CONNECT_TIMEOUT": 1.0,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "DELIVERY_LOG": True,
        "DASHBOARD_TOKEN": DASHBOARD_TOKEN,
    }
    flask_app = make_app(config, tmp_path / "instance")
    yield flask_app
    cached = flask_app.extensions.get("qstash_jobs.webhook_client")
    if cached:
        cached[1].close()
    store = get_store(flask_app)
    if store is not None:
        store.close()


def with_credentials(url: str, userinfo: str = f"user:{PASSWORD}") -> str:
    return url.replace("://", f"://{userinfo}@", 1)


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Return every captured record as a handler would write it, tracebacks included."""
    formatter = logging.Formatter(
        "%(message)s %(webhook_failure)s", defaults={"webhook_failure": ""}
    )
    return "\n".join(formatter.format(record) for record in caplog.records)


def assert_hidden(text: str) -> None:
    assert PASSWORD not in text and TOKEN not in text, text


def test_the_subscriber_still_gets_the_credentials(
    client: DeliveryClient, receiver: Recorder
) -> None:
    """Redaction is for showing: the request carries them as Basic auth."""
    assert (
        client.deliver("deliver-webhook", payload(with_credentials(receiver.url))).status_code
        == 200
    )
    expected = base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    assert receiver.requests[0].headers["authorization"] == f"Basic {expected}"


def gone_url() -> str:
    with recording_server() as gone:
        return gone.url


@pytest.mark.parametrize("userinfo", [f"user:{PASSWORD}", TOKEN])
@pytest.mark.parametrize(
    ("scenario", "status"),
    [
        ("answers-500", 503),
        ("answers-410", 489),
        ("redirects", 503),
        ("times-out", 503),
        ("refuses-connections", 503),
        ("blocked-address", 489),
        ("unrequestable-url", 489),
    ],
)
def test_no_answer_or_log_record_shows_the_credentials(
    client: DeliveryClient,
    receiver: Recorder,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    userinfo: str,
    scenario: str,
    status: int,
) -> None:
    """Whatever went wrong, QStash's answer and every log record name http://***@host."""
    url = receiver.url + "/hook"
    if scenario == "answers-500":
        receiver.reply(Reply(500, {"error": PASSWORD}))
    elif scenario == "answers-410":
        receiver.reply(Reply(410, {}))
    elif scenario == "redirects":
        receiver.reply(Reply(302, {}, {"Location": receiver.url + "/elsewhere"}))
    elif scenario == "times-out":
        receiver.reply(Reply(200, {}, delay=1.5))
    elif scenario == "refuses-connections":
        url = gone_url()
    elif scenario == "blocked-address":
        monkeypatch.setattr(outbound, "resolve", lambda host, port: ["10.0.0.1"])
        url = "http://hooks.example/x"
    else:
        url = "http://１２７.0.0.1/x"
    with caplog.at_level(logging.DEBUG):
        response = client.deliver("deliver-webhook", payload(with_credentials(url, userinfo)))
    assert response.status_code == status, response.get_json()
    assert_hidden(response.get_data(as_text=True))
    assert_hidden(logged(caplog))
    if status == 503 or scenario != "unrequestable-url":
        assert "***@" in response.get_json()["message"]


@pytest.fixture
def failures() -> Iterator[list[WebhookFailure]]:
    seen: list[WebhookFailure] = []
    webhook.on_webhook_failure(seen.append)
    yield seen
    webhook.failure_hooks.remove(seen.append)


def test_failure_callback_log_row_dashboard_and_hook_show_no_credentials(
    app: Flask,
    receiver: Recorder,
    caplog: pytest.LogCaptureFixture,
    failures: list[WebhookFailure],
) -> None:
    """All attempts, the failure callback, the log rows and the dashboard: ***@ only."""
    queue = StubQueue.install(app)
    receiver.reply(*[Reply(500, {"error": "down"})] * 6)
    with app.app_context():
        deliver_webhook.enqueue(payload(with_credentials(receiver.url + "/hook")))
    with caplog.at_level(logging.DEBUG):
        queue.drain()
    [callback] = queue.published("webhook-failed")
    our_answer = base64.b64decode(json.loads(callback.message.body)["body"])
    assert_hidden(our_answer.decode())
    assert json.loads(our_answer)["errors"]["targetUrl"] == redact_url(
        with_credentials(receiver.url + "/hook")
    )
    [failure] = failures
    assert failure.target_url == f"http://***@{receiver.url.split('://')[1]}/hook"
    assert_hidden(logged(caplog))
    assert f"target=http://***@{receiver.url.split('://')[1]}/hook" in logged(caplog)

    store = get_store(app)
    assert store is not None
    store.flush()
    with store.read() as conn:
        rows = queries.latest_failures(conn, limit=50)
    assert len(rows) == 6
    for row in rows:
        assert row.error is not None and "***@" in row.error
        assert_hidden(row.error)
    page = app.test_client().get(
        "/dashboard/", headers={"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
    )
    assert page.status_code == 200
    assert_hidden(page.get_data(as_text=True))
