"""Fixtures for the cron jobs: the real app of discovered jobs over a real store.

The store is SQLite in ``tmp_path`` and, when ``TEST_DATABASE_URL`` reaches a server,
PostgreSQL too (the ``database_url`` fixture of the operations tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import jobs.cron
from app import create_app
from app.publishing.client import EXTENSION as PUBLISHER
from app.qstash.client import QStash
from app.store import Store
from app.store.schema import claims, deliveries
from app.testing import StubQueue
from tests.conftest import TEST_CONFIG
from tests.ops.conftest import close_store, database_url, postgres_url, store

__all__ = ["database_url", "postgres_url", "store"]  # the operations tests' fixtures

ADMINS = ["ada@example.com", "grace@example.com"]


def cron_config(url: str, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Return a test config with the log and guard on ``url``, the outbox in ``tmp_path``."""
    return {
        **TEST_CONFIG,
        "DATABASE_URL": url,
        "DELIVERY_LOG": True,
        "DUPLICATE_GUARD": True,
        "ADMIN_EMAILS": ADMINS,
        "EMAIL_OUTBOX": str(tmp_path / "outbox"),
        "RESEND_API_KEY": None,
        **overrides,
    }


@pytest.fixture
def make_app(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Build apps of every discovered job; their stores are closed after the test."""
    made: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        app = create_app(cron_config(database_url, tmp_path, **overrides))
        app.instance_path = str(tmp_path / "instance")
        made.append(app)
        return app

    yield make
    for app in made:
        close_store(app)
        client = app.extensions.get(PUBLISHER)
        if isinstance(client, QStash):
            client.close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def queue(app: Flask) -> StubQueue:
    return StubQueue.install(app)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """Set the time the cron jobs believe it is."""

    def set_time(when: datetime) -> None:
        monkeypatch.setattr(jobs.cron, "now", lambda: when)

    return set_time


def row(job: str, at_ms: int, *, outcome: str = "ok", **values: Any) -> dict[str, Any]:
    """Return a delivery-log row of ``job`` at ``at_ms``."""
    failed = outcome != "ok"
    return {
        "at_ms": at_ms,
        "job": job,
        "message_id": values.pop("message_id", f"msg_{job}_{at_ms}"),
        "retried": 0,
        "outcome": outcome,
        "status": 500 if failed else 200,
        "duration_ms": 10.0,
        "error": "RuntimeError: boom" if failed else None,
        "guard": None,  # every row has every key: executemany takes the first row's
        "dlq_id": None,
        **values,
    }


def insert_rows(store: Store, rows: list[dict[str, Any]]) -> None:
    """Write delivery-log rows straight into the store."""
    with store.engine.begin() as conn:
        conn.execute(deliveries.insert(), rows)


def insert_claim(store: Store, message_id: str, *, state: str, at_ms: int) -> None:
    """Write one claim that was taken (and, if done, completed) at ``at_ms``."""
    with store.engine.begin() as conn:
        conn.execute(
            claims.insert(),
            {
                "job": "send-email",
                "message_id": message_id,
                "state": state,
                "token": "t",
                "lease_until_ms": at_ms + 150_000,
                "claimed_at_ms": at_ms,
                "completed_at_ms": at_ms if state == "done" else None,
            },
        )
