"""The delivery log: one row per delivery, every outcome, never failing a delivery."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, abort
from sqlalchemy import select, text

from app import config, create_app
from app.jobs import JobRegistry
from app.qstash.signature import sign
from app.store import Store, enabled, get_store
from app.store.queries import latest_failures
from app.store.schema import deliveries
from app.testing import DeliveryClient
from tests.conftest import APP_URL, CURRENT_KEY, Calls, make_registry
from tests.ops.conftest import close_store, ops_config


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


PHISHING = "URGENT: your account is locked, log in at https://evil.example/reset"


#: name -> (request headers beyond the message id, body): requests refused before the
#: signature was verified.
UNAUTHENTICATED: dict[str, tuple[dict[str, str], bytes]] = {
    "no signature": ({}, b"{}"),
    "an empty signature": ({"Upstash-Signature": ""}, b"{}"),
    "a garbage signature": ({"Upstash-Signature": "not.a.jwt"}, b"{}"),
    "a token of another key": (
        {"Upstash-Signature": sign(b"{}", url=APP_URL + "/api/jobs/noop", key="sig_x" * 7)},
        b"{}",
    ),
    "a body over the size limit": ({}, b"x" * 2048),
    "a body over the size limit, validly signed": (
        {"Upstash-Signature": sign(b"x" * 2048, url=APP_URL + "/api/jobs/noop", key=CURRENT_KEY)},
        b"x" * 2048,
    ),
}


@pytest.mark.parametrize("name", list(UNAUTHENTICATED))
def test_unauthenticated_requests_are_never_logged(name: str, tmp_path: Path, calls: Calls) -> None:
    """A refused request writes no row: nothing its sender chose reaches the digest or dashboard."""
    headers, body = UNAUTHENTICATED[name]
    app = create_app(
        ops_config(f"sqlite:///{tmp_path}/u.sqlite3", QSTASH_MAX_BODY_SIZE=1024),
        registry=make_registry(calls),
    )
    client = DeliveryClient(app)
    for _ in range(3):
        response = client.post(
            "/api/jobs/noop", data=body, headers={"Upstash-Message-Id": PHISHING, **headers}
        )
        assert response.status_code in (401, 489)
    store = get_store(app)
    assert store is not None
    assert rows(store) == [] and len(calls) == 0
    assert store.log is not None and store.log.writer.dropped == 0
    close_store(app)


def test_a_handlers_own_401_is_logged_as_an_error(tmp_path: Path) -> None:
    """A verified delivery answered 401 by its handler is logged as an error, not hidden."""
    registry = JobRegistry()
    registry.job("upstream")(lambda payload, delivery: abort(401))
    app = create_app(ops_config(f"sqlite:///{tmp_path}/h.sqlite3"), registry=registry)
    DeliveryClient(app).deliver("upstream", {}, message_id="msg_401")
    store = get_store(app)
    assert store is not None
    [row] = rows(store)
    assert (row.outcome, row.status, row.message_id) == ("error", 401, "msg_401")
    with store.read() as conn:
        [failure] = latest_failures(conn)
    assert failure.message_id == "msg_401"
    close_store(app)


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


def test_a_delivery_only_queues_its_row(client: DeliveryClient, store: Store) -> None:
    """Nothing is written while a delivery is answered or closed: the writer writes the
    queue, all of it at once."""
    store.writer.delay = 3600  # set before its thread starts: it waits an hour
    for _ in range(3):
        client.deliver("noop", {}).close()  # close: what the WSGI server does after the answer
    with store.read() as conn:
        assert conn.execute(select(deliveries)).all() == []
    assert store.flush()
    with store.read() as conn:
        assert len(conn.execute(select(deliveries)).all()) == 3


def test_the_writers_thread_writes_a_quiet_workers_rows(
    client: DeliveryClient, store: Store
) -> None:
    """Without a flush or another delivery, a row lands within the writer's delay."""
    client.deliver("noop", {}, message_id="msg_quiet")
    deadline = time.monotonic() + 5
    found: list[Any] = []
    while not found and time.monotonic() < deadline:
        time.sleep(store.writer.delay)
        with store.read() as conn:
            found = conn.execute(select(deliveries.c.message_id)).all()
    assert [row.message_id for row in found] == ["msg_quiet"]


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
