"""The store: the delivery log and the duplicate-delivery guard, over SQLAlchemy Core.

``init_app(app)`` opens ``DATABASE_URL`` (SQLite in the instance folder by default),
migrates the schema, and registers the two delivery hooks: the guard first (it may
answer instead of the handler), then the log. Modules: ``schema`` (tables, migrations),
``engine`` (connection settings), ``claims`` + ``guard`` (duplicates), ``log`` (writes),
``queries`` (reads and expiry, for the dashboard and the cron jobs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine

from app.errors import ConfigurationError
from app.hooks import add_delivery_hook
from app.store.claimer import Claimer, HostClaimer
from app.store.claims import SUPPORTED_DIALECTS
from app.store.engine import READONLY, database_url, forget_connections_after_fork, make_engine
from app.store.guard import DuplicateGuard
from app.store.log import BatchWriter, DeliveryLog
from app.store.schema import migrate

if TYPE_CHECKING:
    from flask import Flask

EXTENSION = "qstash_jobs.store"


@dataclass
class Store:
    """The database behind an app, and the hooks using it."""

    engine: Engine
    log: DeliveryLog | None
    guard: DuplicateGuard | None

    def read(self) -> Connection:
        """Open a read-only connection (takes no write lock on SQLite)."""
        return self.engine.connect().execution_options(**{READONLY: True})

    def flush(self, timeout: float = 10.0) -> bool:
        """Write the buffered log rows and queued claim completions now.

        Return False if the log's buffer stayed locked past ``timeout``.
        """
        if self.guard:
            self.guard.claimer.flush()
        return self.log.writer.flush(timeout) if self.log else True

    def close(self) -> None:
        """Write what is buffered or queued, stop the timers and close every connection."""
        if self.guard:
            self.guard.claimer.close()
        if self.log:
            self.log.writer.close()
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
    forget_connections_after_fork(engine)
    store = Store(
        engine=engine,
        log=DeliveryLog(BatchWriter(engine)) if log_on else None,
        guard=(
            DuplicateGuard(claimer_for(engine), app.config["DUPLICATE_LEASE_SECONDS"])
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


def claimer_for(engine: Engine) -> Claimer | HostClaimer:
    """Kernel locks next to a SQLite file (one host); leased rows in PostgreSQL."""
    if engine.dialect.name == "sqlite":
        return HostClaimer(engine, f"{engine.url.database}.claims")
    return Claimer(engine)


def get_store(app: Flask) -> Store | None:
    """Return the app's store, or None when neither the log nor the guard is on."""
    store: Store | None = app.extensions.get(EXTENSION)
    return store
