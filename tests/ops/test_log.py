"""The delivery log: one row per delivery, every outcome, never failing a delivery."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text

from app import config
from app.store import Store, enabled
from app.store.schema import deliveries
from app.testing import DeliveryClient


def rows(store: Store) -> list[Any]:
    assert store.flush()
    with store.read() as conn:
        return list(conn.execute(select(deliveries).order_by(deliveries.c.id)))


@pytest.mark.parametrize(
    ("job", "payload", "outcome", "status", "error"),
    [
        ("noop", {}, "ok", 200, None),
        ("later", {}, "retry", 503, "retry_later: rate limited upstream"),
        ("give-up", {}, "non-retryable", 489, "non_retryable: the account was deleted"),
        ("resize", {"bad": 1}, "non-retryable", 489, "invalid_payload: "),
        ("crash", {}, "error", 500, "internal_error: job 'crash' raised RuntimeError"),
    ],
)
def test_each_outcome_is_recorded(
    client: DeliveryClient,
    store: Store,
    job: str,
    payload: Any,
    outcome: str,
    status: int,
    error: str | None,
) -> None:
    """A delivery's job, ids, attempt, outcome, status, duration and error are stored."""
    client.deliver(job, payload, message_id="msg_log", retried=2, schedule_id="scd_1")
    [row] = rows(store)
    assert (row.job, row.message_id, row.schedule_id, row.retried) == (
        job,
        "msg_log",
        "scd_1",
        2,
    )
    assert (row.outcome, row.status) == (outcome, status)
    assert row.duration_ms >= 0
    assert (row.error is None) if error is None else row.error.startswith(error)


def test_forged_signature_is_recorded_as_bad_signature(
    client: DeliveryClient, store: Store
) -> None:
    """A refused delivery is logged with outcome bad-signature and its claimed message id."""
    client.deliver("noop", {}, key="sig_forger_0123456789abcdefghijk", message_id="msg_forged")
    [row] = rows(store)
    assert (row.outcome, row.status, row.message_id) == ("bad-signature", 401, "msg_forged")
    assert row.error.startswith("signature_mismatch")


def test_error_summary_never_contains_the_exception_text(
    client: DeliveryClient, store: Store
) -> None:
    """The stored error is the public answer, not the exception message (it may hold secrets)."""
    client.deliver("crash", {})
    [row] = rows(store)
    assert "hunter2" not in row.error


def test_log_failure_never_fails_a_delivery(
    app: Flask, client: DeliveryClient, store: Store
) -> None:
    """With the log table gone, deliveries still answer 200 and the lost rows are counted."""
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE deliveries"))
    responses = [client.deliver("noop", {}).status_code for _ in range(3)]
    assert responses == [200, 200, 200]
    assert store.log is not None and store.flush()
    assert store.log.writer.dropped == 3


def test_full_buffer_drops_rows_without_blocking(client: DeliveryClient, store: Store) -> None:
    """When the buffer is full a delivery drops its row instead of waiting for the database."""
    assert store.log is not None
    store.log.writer.capacity = 0
    assert client.deliver("noop", {}).status_code == 200
    assert store.log.writer.dropped == 1
    assert rows(store) == []


def test_rows_are_written_in_batches_after_the_answer(client: DeliveryClient, store: Store) -> None:
    """Rows wait in the buffer until a batch is full, then go out in one write."""
    assert store.log is not None
    store.log.writer.batch = 3
    store.log.writer.delay = 3600
    for _ in range(2):
        client.deliver("noop", {})
    with store.read() as conn:
        assert conn.execute(select(deliveries)).all() == []
    response = client.deliver("noop", {})
    response.close()  # what the WSGI server does once the answer is sent
    with store.read() as conn:
        assert len(conn.execute(select(deliveries)).all()) == 3


@pytest.mark.parametrize(
    ("testing", "url", "expected"),
    [
        (True, None, (False, False)),
        (True, "sqlite:////tmp/x.db", (True, True)),
        (False, None, (True, True)),
    ],
)
def test_log_and_guard_are_on_by_default_except_in_tests_without_a_database(
    monkeypatch: pytest.MonkeyPatch, testing: bool, url: str | None, expected: tuple[bool, bool]
) -> None:
    """Production defaults: both on; a TESTING app without DATABASE_URL writes nothing."""
    monkeypatch.setitem(config.DEFAULTS, "DELIVERY_LOG", None)
    monkeypatch.setitem(config.DEFAULTS, "DUPLICATE_GUARD", True)
    flask_app = Flask("defaults")
    config.load(flask_app, {"TESTING": testing, "DATABASE_URL": url}, environ={})
    assert enabled(flask_app) == expected
