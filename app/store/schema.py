"""The delivery log's tables as they are now, and the ordered migrations that build them.

``migrate(engine)`` brings any database to ``LATEST``: it creates ``schema_version`` on
first start, then applies each missing migration in order, in one transaction, under a
lock (PostgreSQL advisory lock; SQLite ``BEGIN IMMEDIATE``) so that several gunicorn
workers or hosts starting at once migrate exactly once. A migration is frozen once
released: a later change appends a new one and updates the tables below to match.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    select,
    text,
)

from app.errors import ConfigurationError
from app.store.engine import writing

# SQLite only auto-increments an INTEGER PRIMARY KEY.
_Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(100), nullable=False),
    Column("applied_at_ms", BigInteger, nullable=False),
)


def _deliveries(meta: MetaData) -> Table:
    return Table(
        "deliveries",
        meta,
        Column("id", _Id, primary_key=True, autoincrement=True),
        # Epoch milliseconds (UTC) the delivery arrived: integer buckets in any dialect.
        Column("at_ms", BigInteger, nullable=False),
        Column("job", String(100), nullable=False),
        Column("message_id", String(200)),
        Column("schedule_id", String(200)),
        Column("retried", Integer, nullable=False, default=0),
        Column("outcome", String(20), nullable=False),
        Column("status", Integer, nullable=False),
        Column("duration_ms", Float, nullable=False),
        Column("error", Text),
        # Set when the duplicate guard answered instead of the handler: replayed / busy.
        Column("guard", String(20)),
        Column("dlq_id", String(200)),
        Index("ix_deliveries_at", "at_ms"),
        Index("ix_deliveries_job_at", "job", "at_ms"),
        Index("ix_deliveries_message", "message_id"),
    )


def _claims(meta: MetaData) -> Table:
    return Table(
        "claims",
        meta,
        Column("job", String(100), nullable=False),
        Column("message_id", String(200), nullable=False),
        Column("state", String(10), nullable=False),  # running / done
        Column("token", String(64), nullable=False),
        Column("lease_until_ms", BigInteger, nullable=False),
        Column("claimed_at_ms", BigInteger, nullable=False),
        Column("completed_at_ms", BigInteger),
        Column("takeovers", Integer, nullable=False, default=0),
        Column("status", Integer),
        Column("content_type", String(200)),
        Column("body", LargeBinary),
        PrimaryKeyConstraint("job", "message_id", name="pk_claims"),
        Index("ix_claims_state_completed", "state", "completed_at_ms"),
    )


deliveries = _deliveries(metadata)
claims = _claims(metadata)


def _v1_initial(conn: Connection) -> None:
    # Frozen copies of the version-1 tables, independent of later edits above.
    frozen = MetaData()
    _deliveries(frozen)
    _claims(frozen)
    frozen.create_all(conn)


#: (version, name, migration), in order. Append; never edit a released entry.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "deliveries and claims", _v1_initial),
]
LATEST = MIGRATIONS[-1][0]

# Any constant both processes agree on; it names "the qstash-jobs migration lock".
_ADVISORY_LOCK = 0x51_57_A5_4A


def current_version(conn: Connection) -> int:
    """Return the schema version of the database (0 when never migrated)."""
    version = conn.execute(select(func.max(schema_version.c.version))).scalar()
    return int(version or 0)


def migrate(engine: Engine) -> int:
    """Apply the missing migrations in order; return the version now in place."""
    with writing(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})
        schema_version.create(conn, checkfirst=True)
        version = current_version(conn)
        if version > LATEST:
            raise ConfigurationError(
                f"the database schema is at version {version}, newer than this code knows"
                f" ({LATEST}); deploy the newer code or point DATABASE_URL elsewhere"
            )
        for number, name, step in MIGRATIONS:
            if number > version:
                step(conn)
                conn.execute(
                    schema_version.insert().values(
                        version=number, name=name, applied_at_ms=int(time.time() * 1000)
                    )
                )
        return LATEST
