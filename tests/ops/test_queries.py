"""What the dashboard and cron jobs read: stats, series, failures; retention; DLQ ids."""

from __future__ import annotations

from typing import Any

import pytest

from app.store import Store, claims
from app.store.queries import (
    DAY_MS,
    expire,
    job_stats,
    latest_failures,
    percentile,
    record_dlq,
    series,
)
from app.store.schema import deliveries

NOW = 1_800_000_000_000
HOUR = 3_600_000


def row(job: str, at_ms: int, *, ms: float = 10.0, outcome: str = "ok", **extra: Any) -> dict:
    status = {"ok": 200, "error": 500, "retry": 503, "non-retryable": 489}[outcome]
    return {
        "at_ms": at_ms,
        "job": job,
        "message_id": extra.get("message_id", f"msg_{at_ms}"),
        "schedule_id": None,
        "retried": extra.get("retried", 0),
        "outcome": outcome,
        "status": status,
        "duration_ms": ms,
        "error": None if outcome == "ok" else "boom",
        "guard": extra.get("guard"),
        "dlq_id": None,
    }


def insert(store: Store, rows: list[dict]) -> None:
    with store.engine.begin() as conn:
        conn.execute(deliveries.insert(), rows)


def test_stats_count_failures_and_percentiles(store: Store) -> None:
    """Per job: total, failures (not guard answers), p50/p95 interpolated like PostgreSQL."""
    rows = [row("a", NOW - i * 1000, ms=float(i)) for i in range(1, 101)]
    rows += [row("a", NOW - 5, outcome="error"), row("a", NOW - 6, outcome="retry", guard="busy")]
    rows += [row("b", NOW - 10 * DAY_MS)]  # outside the window
    insert(store, rows)
    with store.read() as conn:
        [stats] = job_stats(conn, NOW - DAY_MS, NOW + 1)
    assert (stats.job, stats.total, stats.failures) == ("a", 102, 1)
    assert stats.failure_rate == pytest.approx(1 / 102)
    expected = percentile(sorted([float(i) for i in range(1, 101)] + [10.0, 10.0]), 0.95)
    assert stats.p95_ms == pytest.approx(expected)


def test_percentile_matches_postgres_percentile_cont() -> None:
    """percentile() interpolates linearly between the closest ranks."""
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([], 0.95) is None


def test_series_counts_per_job_per_bucket(store: Store) -> None:
    """Deliveries fall into the hour bucket they arrived in, per job."""
    since = NOW - 3 * HOUR
    insert(store, [row("a", since + 10), row("a", since + HOUR + 1), row("b", since + 2 * HOUR)])
    insert(store, [row("a", since + 2 * HOUR + 5), row("a", since - 1)])
    with store.read() as conn:
        assert series(conn, since, NOW, HOUR) == {"a": [1, 1, 1], "b": [0, 0, 1]}


def test_latest_failures_newest_first(store: Store) -> None:
    """Failed attempts come back newest first with message id and attempt; successes never."""
    insert(
        store,
        [
            row("a", NOW - 3, outcome="error", message_id="m1", retried=0),
            row("a", NOW - 2, outcome="non-retryable", message_id="m2", retried=3),
            row("a", NOW - 1),
        ],
    )
    with store.read() as conn:
        failures = latest_failures(conn, limit=10)
    assert [(f.message_id, f.retried) for f in failures] == [("m2", 3), ("m1", 0)]


def test_dlq_id_is_attached_to_failed_attempts(store: Store) -> None:
    """record_dlq marks the failed attempts of a message with its DLQ id."""
    insert(
        store, [row("a", NOW - 2, outcome="error", message_id="m"), row("a", NOW, message_id="m")]
    )
    with store.engine.begin() as conn:
        assert record_dlq(conn, "m", "dlq_1") == 1
    with store.read() as conn:
        [failure] = latest_failures(conn)
    assert failure.dlq_id == "dlq_1"


def test_expire_deletes_only_what_is_past_retention(store: Store) -> None:
    """Old log rows and old completed claims go; recent ones and live claims stay."""
    insert(store, [row("a", NOW - 31 * DAY_MS), row("a", NOW - 29 * DAY_MS)])
    with store.engine.begin() as conn:
        for message_id, at in (("old", NOW - 15 * DAY_MS), ("new", NOW - DAY_MS)):
            won = claims.claim(conn, "a", message_id, now_ms=at, lease_ms=1000)
            assert isinstance(won, claims.Acquired)
            claims.complete(
                conn, "a", message_id, won.token, now_ms=at, status=200, content_type=None, body=b""
            )
        claims.claim(conn, "a", "live", now_ms=NOW, lease_ms=1000)
        assert expire(conn, NOW, log_days=30, claim_days=14) == (1, 1)
    with store.read() as conn:
        assert conn.execute(claims.claims.select()).all().__len__() == 2
