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
    literal_column,
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


#: The rows the message-id index covers from version 2 on: attempts that did not succeed.
#: Rendered inline (no bound parameter): a query repeating this term lets the planner
#: prove that the partial index applies.
UNSUCCESSFUL = literal_column("deliveries.outcome") != literal_column("'ok'")


def _deliveries(meta: MetaData, version: int = 2) -> Table:
    if version >= 2:
        # Only the DLQ callback and cron retries look rows up by message id, and both
        # want attempts that failed; indexing every row cost a random-order B-tree insert
        # (a page write) per delivery.
        message_index = Index(
            "ix_deliveries_message_failed",
            "message_id",
            sqlite_where=UNSUCCESSFUL,
            postgresql_where=UNSUCCESSFUL,
        )
    else:
        message_index = Index("ix_deliveries_message", "message_id")
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
        message_index,
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
    _deliveries(frozen, version=1)
    _claims(frozen)
    frozen.create_all(conn)


def _v2_message_index_for_failures(conn: Connection) -> None:
    before = _deliveries(MetaData(), version=1)
    after = _deliveries(MetaData(), version=2)
    (old,) = (index for index in before.indexes if index.name == "ix_deliveries_message")
    (new,) = (index for index in after.indexes if index.name == "ix_deliveries_message_failed")
    old.drop(conn)
    new.create(conn)


#: (version, name, migration), in order. Append; never edit a released entry.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "deliveries and claims", _v1_initial),
    (2, "message-id index on unsuccessful attempts only", _v2_message_index_for_failures),
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
