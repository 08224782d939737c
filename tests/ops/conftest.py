"""Fixtures for the operations tests: one database per dialect (SQLite and PostgreSQL).

PostgreSQL comes from ``TEST_DATABASE_URL`` (``.ci/postgres.sh`` starts one and prints it).
Its tests are skipped only when no server is reachable outside CI; with ``CI=true`` an
unreachable server fails them. Each test session works in a database of its own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app import create_app
from app.store import Store, get_store
from app.store.schema import metadata
from app.testing import DeliveryClient
from tests.conftest import TEST_CONFIG, Calls, make_registry

DIALECTS = ["sqlite", "postgresql"]


def _admin_url() -> str | None:
    url = os.environ.get("TEST_DATABASE_URL")
    in_ci = os.environ.get("CI", "").lower() == "true"
    problem = "TEST_DATABASE_URL is not set (run: export TEST_DATABASE_URL=$(.ci/postgres.sh))"
    if url:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return url
        except Exception as exc:
            problem = f"PostgreSQL at TEST_DATABASE_URL is unreachable: {exc}"
        finally:
            engine.dispose()
    if in_ci:
        pytest.fail(f"CI=true and {problem}")
    return None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """Yield the URL of a fresh database for this session, or None if there is no server."""
    admin = _admin_url()
    if admin is None:
        yield None
        return
    name = f"qstash_jobs_ops_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def reset_postgres(url: str) -> None:
    """Drop this project's tables so the next test starts from an empty database."""
    engine = create_engine(url)
    with engine.begin() as conn:
        # Every table the migrations create (read from the schema, so a new one is not
        # forgotten: a table left behind makes the next test's migration fail).
        names = ", ".join(table.name for table in metadata.sorted_tables)
        conn.execute(text(f"DROP TABLE IF EXISTS {names}"))
    engine.dispose()


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None) -> str:
    """Return an empty database's URL, once per dialect."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    if postgres_url is None:
        pytest.skip("no PostgreSQL server reachable (set TEST_DATABASE_URL)")
    reset_postgres(postgres_url)
    return postgres_url


def ops_config(database_url: str, **overrides: Any) -> dict[str, Any]:
    """Return the shared test config with the log and guard on ``database_url``."""
    store = {"DATABASE_URL": database_url, "DELIVERY_LOG": True, "DUPLICATE_GUARD": True}
    return {**TEST_CONFIG, **store, **overrides}


@pytest.fixture
def app(calls: Calls, database_url: str) -> Iterator[Flask]:
    flask_app = create_app(ops_config(database_url), registry=make_registry(calls))
    yield flask_app
    close_store(flask_app)


def close_store(flask_app: Flask) -> None:
    """Stop the app's log writer and close its connections (no leaks between tests)."""
    found = get_store(flask_app)
    if found is not None:
        found.close()


@pytest.fixture
def store(app: Flask) -> Store:
    found = get_store(app)
    assert found is not None
    return found


@pytest.fixture
def client(app: Flask) -> DeliveryClient:
    return DeliveryClient(app)
