"""Rows of unauthenticated requests that older versions logged are never shown.

Before issue 12 the delivery log stored every 401 (and the 489 for a body over the size
limit, refused before verification) with the caller's ``Upstash-Message-Id``: 4,000
forged POSTs put phishing text into the digest email and the dashboard. Such rows may
still sit in an existing database; no query, report or page shows them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.store import Store, get_store, queries
from app.store.schema import deliveries
from jobs.cron import digest_jobs, weekly_jobs
from tests.conftest import Calls, make_registry
from tests.ops.conftest import close_store, ops_config

PHISHING = "URGENT-account-locked-log-in-at-https://evil.example/reset"
TOKEN = "a-dashboard-token-of-some-length"
NOW = int(time.time() * 1000)


def _row(
    message_id: str, outcome: str, status: int, error: str | None, ago_ms: int
) -> dict[str, Any]:
    return {
        "at_ms": NOW - ago_ms,
        "job": "noop",
        "message_id": message_id,
        "schedule_id": None,
        "retried": 0,
        "outcome": outcome,
        "status": status,
        "duration_ms": 1.0,
        "error": error,
        "guard": None,
        "dlq_id": None,
    }


#: What the old code wrote for unauthenticated requests.
OLD_UNVERIFIED = [
    _row(
        PHISHING,
        "bad-signature",
        401,
        "signature_mismatch: the signature matches neither the current nor the next key",
        1000,
    ),
    _row(PHISHING + "-2", "bad-signature", 401, "missing_signature: no header", 2000),
    _row(
        PHISHING + "-3",
        "non-retryable",
        489,
        "payload_too_large: the body is larger than QSTASH_MAX_BODY_SIZE (1048576 bytes)",
        3000,
    ),
]
#: Verified deliveries, which stay visible.
VERIFIED = [
    _row("msg_ok", "ok", 200, None, 4000),
    _row("msg_failed", "error", 500, "internal_error: job 'noop' raised RuntimeError", 5000),
    _row("msg_big", "non-retryable", 489, "payload_too_large: the image is over 20 MB", 6000),
]


@pytest.fixture
def app(calls: Calls, database_url: str) -> Iterator[Flask]:
    flask_app = create_app(
        ops_config(database_url, DASHBOARD_TOKEN=TOKEN), registry=make_registry(calls)
    )
    store = get_store(flask_app)
    assert store is not None
    with store.engine.begin() as conn:
        conn.execute(deliveries.insert(), OLD_UNVERIFIED + VERIFIED)
    yield flask_app
    close_store(flask_app)


@pytest.fixture
def store(app: Flask) -> Store:
    found = get_store(app)
    assert found is not None
    return found


def test_queries_leave_unverified_rows_out(store: Store) -> None:
    """Stats, series and failures count only the verified deliveries."""
    since, until = NOW - 3_600_000, NOW + 1
    with store.read() as conn:
        [stats] = queries.job_stats(conn, since, until)
        counts = queries.series(conn, since, until, 3_600_001)
        failed = queries.series(conn, since, until, 3_600_001, failed_only=True)
        failures = queries.latest_failures(conn, since_ms=since)
    assert (stats.total, stats.failures) == (3, 2)
    assert (counts, failed) == ({"noop": [3]}, {"noop": [2]})
    assert [f.message_id for f in failures] == ["msg_failed", "msg_big"]


def test_unverified_rows_are_no_first_attempt_and_get_no_dlq_id(store: Store) -> None:
    """A forged row neither moves a cron firing nor takes the DLQ id of a real message."""
    with store.engine.begin() as conn:
        assert queries.first_attempt_ms(conn, "noop", PHISHING) is None
        assert queries.record_dlq(conn, PHISHING, "dlq_1") == 0
        assert queries.first_attempt_ms(conn, "noop", "msg_failed") == NOW - 5000


def test_reports_leave_unverified_rows_out(store: Store) -> None:
    """The digest and the weekly report neither list nor count the forged requests."""
    with store.read() as conn:
        digest = digest_jobs(conn, NOW - 3_600_000, NOW + 1)
        weekly = weekly_jobs(conn, NOW - 3_600_000, NOW + 1)
    assert PHISHING not in repr(digest)
    [job] = digest
    assert (job["failures"], job["attempts"]) == (2, 3)
    assert [item["messageId"] for item in job["latest"]] == ["msg_failed", "msg_big"]
    assert (weekly[0]["total"], weekly[0]["failures"]) == (3, 2)


def test_dashboard_leaves_unverified_rows_out(app: Flask) -> None:
    """The dashboard's latest failures and counts show no forged request."""
    page = app.test_client().get(
        "/dashboard/?window=1h", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "msg_failed" in text and "msg_big" in text
    assert "evil.example" not in text and "bad-signature" not in text


def test_the_fixture_rows_are_what_the_old_log_wrote(store: Store) -> None:
    """Guard against a vacuous test: the unverified rows really are in the table."""
    with store.read() as conn:
        ids: set[Any] = {row.message_id for row in conn.execute(deliveries.select())}
    assert {row["message_id"] for row in OLD_UNVERIFIED} <= ids
