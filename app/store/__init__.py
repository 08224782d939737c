"""The store: the delivery log and the duplicate-delivery guard, over SQLAlchemy Core.

``init_app(app)`` opens ``DATABASE_URL`` (SQLite in the instance folder by default),
migrates the schema, and registers the two delivery hooks: the guard first (it may
answer instead of the handler), then the log. Modules: ``schema`` (tables, migrations),
``engine`` (connection settings), ``claims`` + ``guard`` (duplicates), ``log`` (log
rows), ``writer`` (writes both in batches, off the delivery's path), ``queries`` (reads
and expiry, for the dashboard and the cron jobs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine

from app.errors import ConfigurationError
from app.hooks import add_delivery_hook
from app.store.claims import SUPPORTED_DIALECTS
from app.store.engine import READONLY, database_url, make_engine
from app.store.guard import DuplicateGuard
from app.store.log import DeliveryLog
from app.store.schema import migrate
from app.store.writer import Writer

if TYPE_CHECKING:
    from flask import Flask

EXTENSION = "qstash_jobs.store"


@dataclass
class Store:
    """The database behind an app, and the hooks using it."""

    engine: Engine
    writer: Writer
    log: DeliveryLog | None
    guard: DuplicateGuard | None

    def read(self) -> Connection:
        """Open a read-only connection (takes no write lock on SQLite)."""
        return self.engine.connect().execution_options(**{READONLY: True})

    def flush(self, timeout: float = 10.0) -> bool:
        """Write the queued log rows and claim updates now.

        Return False if another write held on past ``timeout``.
        """
        return self.writer.flush(timeout)

    def close(self) -> None:
        """Write what is queued, stop the writer's thread and close every connection."""
        self.writer.close()
        if self.guard:
            self.guard.connections.close()
            self.guard.engine.dispose()
        self.engine.dispose()


def enabled(app: Flask) -> tuple[bool, bool]:
    """Say whether the delivery log and the duplicate guard are on for ``app``."""
    # Tests without a DATABASE_URL leave the repository's instance folder alone.
    automatic_off = app.testing and not app.config["DATABASE_URL"]
    log = app.config["DELIVERY_LOG"]
    log = (not automatic_off) if log is None else bool(log)
    guard = bool(app.config["DUPLICATE_GUARD"]) and (log or not automatic_off)
    return log, guard


def init_app(app: Flask) -> Store | None:
    """Open the database, migrate it and register the guard and log hooks."""
    log_on, guard_on = enabled(app)
    if not (log_on or guard_on):
        return None
    engine = make_engine(database_url(app.config["DATABASE_URL"], app.instance_path))
    if guard_on and engine.dialect.name not in SUPPORTED_DIALECTS:
        raise ConfigurationError(
            f"DUPLICATE_GUARD needs SQLite or PostgreSQL, not {engine.dialect.name};"
            " set DUPLICATE_GUARD=0 to keep only the delivery log"
        )
    try:
        migrate(engine)
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"cannot open the database at DATABASE_URL: {exc}") from exc
    # The master of a preloading gunicorn migrated; its workers open their own connections.
    engine.dispose()
    # SQLite: the request that fills a batch writes it after its answer (app.store.writer).
    writer = Writer(engine, after_answer=engine.dialect.name == "sqlite")
    store = Store(
        engine=engine,
        writer=writer,
        log=DeliveryLog(writer) if log_on else None,
        guard=(
            DuplicateGuard(
                make_engine(engine.url, autocommit=True),
                writer,
                app.config["DUPLICATE_LEASE_SECONDS"],
            )
            if guard_on
            else None
        ),
    )
    if store.guard:
        add_delivery_hook(app, store.guard)
    if store.log:
        add_delivery_hook(app, store.log)
    app.extensions[EXTENSION] = store
    return store


def get_store(app: Flask) -> Store | None:
    """Return the app's store, or None when neither the log nor the guard is on."""
    store: Store | None = app.extensions.get(EXTENSION)
    return store
