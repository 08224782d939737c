"""Schema versioning and database URLs: created on first start, migrated once, refused if newer."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from app.errors import ConfigurationError
from app.store import queries, schema
from app.store.engine import database_url, make_engine, writing
from app.store.schema import LATEST, deliveries, metadata, migrate, schema_version


def test_first_start_creates_the_latest_schema(database_url: str) -> None:
    """A fresh database gets every table of the current metadata, with their columns."""
    engine = make_engine(database_url_of(database_url))
    assert migrate(engine) == LATEST
    found = inspect(engine)
    for table in metadata.sorted_tables:
        columns = {column["name"] for column in found.get_columns(table.name)}
        assert columns == set(table.columns.keys()), table.name
    engine.dispose()


def test_concurrent_first_starts_migrate_once(database_url: str) -> None:
    """Workers starting together apply each migration exactly once."""
    engines = [make_engine(database_url_of(database_url)) for _ in range(4)]
    errors: list[BaseException] = []

    def start(engine_index: int) -> None:
        try:
            migrate(engines[engine_index])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with engines[0].connect() as conn:
        versions = conn.execute(select(schema_version.c.version)).scalars().all()
    assert sorted(versions) == list(range(1, LATEST + 1))
    for engine in engines:
        engine.dispose()


def test_newer_schema_is_refused(database_url: str) -> None:
    """A database migrated by newer code stops this code from starting, with a clear message."""
    engine = make_engine(database_url_of(database_url))
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(schema_version.insert().values(version=LATEST + 1, name="x", applied_at_ms=0))
    with pytest.raises(ConfigurationError, match="newer than this code"):
        migrate(engine)
    engine.dispose()


def test_a_version_1_database_indexes_only_unsuccessful_attempts_by_message_id(
    database_url: str,
) -> None:
    """Version 2 replaces the index of every row's message id with one of the attempts
    that did not succeed, keeps the rows, and the DLQ lookup still finds them."""
    engine = make_engine(database_url_of(database_url))
    with writing(engine) as conn:
        schema_version.create(conn)
        schema._v1_initial(conn)
        conn.execute(schema_version.insert().values(version=1, name="v1", applied_at_ms=0))
        row = {"job": "noop", "message_id": "msg_1", "retried": 0, "duration_ms": 1.0}
        conn.execute(
            deliveries.insert(),
            [
                {**row, "at_ms": 1, "outcome": "retry", "status": 503},
                {**row, "at_ms": 2, "outcome": "ok", "status": 200},
            ],
        )
    assert migrate(engine) == LATEST
    indexes = {index["name"] for index in inspect(engine).get_indexes("deliveries")}
    assert "ix_deliveries_message_failed" in indexes
    assert "ix_deliveries_message" not in indexes
    with writing(engine) as conn:
        assert queries.record_dlq(conn, "msg_1", "dlq_1") == 1
        assert queries.first_attempt_ms(conn, "noop", "msg_1") == 1
    engine.dispose()


def test_the_dlq_lookup_uses_the_partial_index_on_sqlite(tmp_path: Path) -> None:
    """The DLQ callback's update finds a message's attempts through the partial index
    rather than by scanning the whole log."""
    engine = make_engine(database_url(None, str(tmp_path)))
    migrate(engine)
    compiled = queries.dlq_update("msg_1", "dlq_1").compile(dialect=engine.dialect)
    values = tuple(compiled.params[name] for name in compiled.positiontup or ())
    with engine.connect() as conn:  # prepared as it runs: with parameters, not values
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), values).all()
    assert "ix_deliveries_message_failed" in " ".join(str(step) for step in plan)
    engine.dispose()


def database_url_of(url: str):  # type: ignore[no-untyped-def]
    return database_url(url, "/nonexistent")


def test_default_is_sqlite_in_the_instance_folder(tmp_path: Path) -> None:
    """Without DATABASE_URL the log lives in a SQLite file in the instance folder."""
    url = database_url(None, str(tmp_path / "instance"))
    assert url.get_backend_name() == "sqlite"
    assert url.database == str(tmp_path / "instance" / "qstash-jobs.sqlite3")


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    """SQLite connections use write-ahead logging, so readers never block the writer."""
    engine = make_engine(database_url(None, str(tmp_path)))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_postgres_urls_use_psycopg(scheme: str) -> None:
    """Heroku-style postgres:// URLs are served by psycopg 3."""
    url = database_url(f"{scheme}://u:p@db.example.com/jobs", "/unused")
    assert url.drivername == "postgresql+psycopg"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a database URL"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
    ],
)
def test_bad_database_urls_are_refused(url: str, message: str) -> None:
    """A DATABASE_URL that cannot work is a configuration error naming the problem."""
    with pytest.raises(ConfigurationError, match=message):
        database_url(url, "/unused")


def test_missing_driver_is_a_configuration_error() -> None:
    """A URL whose driver is not installed says which extra to install."""
    with pytest.raises(ConfigurationError, match="not installed"):
        make_engine(database_url("mysql+mysqldb://u@localhost/db", "/unused"))
