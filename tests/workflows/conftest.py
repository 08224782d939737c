"""Workflow tests: an app with its own registry and a store, and a stub queue.

Every test runs on SQLite and on PostgreSQL (``TEST_DATABASE_URL``; skipped without a
server outside CI, see ``tests.ops.conftest``), each time on empty tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text

from app import create_app
from app.jobs import JobRegistry
from app.outbound import CLIENT_EXTENSION
from app.testing import StubQueue
from tests.conftest import TEST_CONFIG
from tests.ops.conftest import postgres_url

__all__ = ["postgres_url"]  # the operations tests' session database


def empty_postgres(url: str) -> str:
    """Drop every table of the database at ``url`` (a session's own); return ``url``."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None) -> str:
    """Return the URL of an empty store, once per dialect."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/wf.sqlite3"
    if postgres_url is None:
        pytest.skip("no PostgreSQL server reachable (set TEST_DATABASE_URL)")
    return empty_postgres(postgres_url)


@pytest.fixture
def registry() -> JobRegistry:
    return JobRegistry()


@pytest.fixture
def make_app(
    database_url: str, registry: JobRegistry
) -> Iterator[Callable[..., tuple[Flask, StubQueue]]]:
    apps: list[Flask] = []

    def make(**config: Any) -> tuple[Flask, StubQueue]:
        settings = {
            **TEST_CONFIG,
            "DATABASE_URL": database_url,
            "DELIVERY_LOG": True,
            "DUPLICATE_GUARD": True,
            **config,
        }
        app = create_app(settings, registry=registry)
        apps.append(app)
        return app, StubQueue.install(app)

    yield make
    for app in apps:
        # ctx.call's pooled client, so no kept-alive socket outlives the test.
        client = app.extensions.get(CLIENT_EXTENSION)
        if client is not None:
            client[1].close()
        store = app.extensions.get("qstash_jobs.store")
        if store is not None:
            store.close()
