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


def _workflow_tables(meta: MetaData) -> tuple[Table, Table, Table]:
    # Durable workflows (app.workflows): a run, its steps (results and waits), and the
    # events notified to runs. Times are epoch milliseconds, JSON values are text.
    runs = Table(
        "workflow_runs",
        meta,
        Column("id", String(200), primary_key=True),
        Column("workflow", String(100), nullable=False),
        # pending / running / waiting / completed / failed / cancelled
        Column("state", String(20), nullable=False),
        Column("input", Text, nullable=False),
        Column("output", Text),
        Column("error", Text),
        Column("failed_step", String(200)),
        # How many main-line steps are recorded: the position of the next one.
        Column("position", Integer, nullable=False, default=0),
        # What the run waits for, for people: "sleep wait-3-days until ...".
        Column("waiting_for", Text),
        Column("created_ms", BigInteger, nullable=False),
        Column("updated_ms", BigInteger, nullable=False),
        Column("finished_ms", BigInteger),
        # The delivery executing the run now, and until when its lease holds.
        Column("lease_token", String(64)),
        Column("lease_message", String(200)),
        Column("lease_until_ms", BigInteger),
        Index("ix_workflow_runs_created", "created_ms"),
        Index("ix_workflow_runs_workflow_created", "workflow", "created_ms"),
        Index("ix_workflow_runs_state_updated", "state", "updated_ms"),
    )
    steps = Table(
        "workflow_steps",
        meta,
        Column("run_id", String(200), nullable=False),
        Column("position", Integer, nullable=False),
        # -1 for the main line; 0..n-1 for the branches of a parallel step.
        Column("branch", Integer, nullable=False),
        Column("name", String(200), nullable=False),
        Column("kind", String(20), nullable=False),  # run / call / sleep / event / parallel
        Column("state", String(20), nullable=False),  # pending / running / waiting / done
        Column("result", Text),
        Column("started_ms", BigInteger, nullable=False),
        Column("finished_ms", BigInteger),
        # Sleeps: when to wake; event waits: when the wait times out.
        Column("wake_ms", BigInteger),
        Column("event_id", String(200)),
        Column("attempts", Integer, nullable=False, default=0),
        Column("lease_token", String(64)),
        Column("lease_message", String(200)),
        Column("lease_until_ms", BigInteger),
        PrimaryKeyConstraint("run_id", "position", "branch", name="pk_workflow_steps"),
        Index("ix_workflow_steps_event_state", "event_id", "state"),
    )
    events = Table(
        "workflow_events",
        meta,
        Column("id", _Id, primary_key=True, autoincrement=True),
        Column("event_id", String(200), nullable=False),
        Column("data", Text, nullable=False),
        Column("at_ms", BigInteger, nullable=False),
        Index("ix_workflow_events_event_at", "event_id", "at_ms"),
        Index("ix_workflow_events_at", "at_ms"),
    )
    return runs, steps, events


deliveries = _deliveries(metadata)
claims = _claims(metadata)
workflow_runs, workflow_steps, workflow_events = _workflow_tables(metadata)


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


def _v3_workflows(conn: Connection) -> None:
    frozen = MetaData()
    for table in _workflow_tables(frozen):
        table.create(conn)


#: (version, name, migration), in order. Append; never edit a released entry.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "deliveries and claims", _v1_initial),
    (2, "message-id index on unsuccessful attempts only", _v2_message_index_for_failures),
    (3, "durable workflows: runs, steps and events", _v3_workflows),
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
