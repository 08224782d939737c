"""A workflow run's durable state: the statements over ``workflow_runs``/``_steps``/``_events``.

Every write that moves a run forward is guarded: a main-line write matches the run's
lease token (a delivery whose lease was taken over changes nothing), a branch write
matches its branch's token, and resolving a wait is a compare-and-set on the waiting
row, so of a notification, a timeout and a replay racing for one wait exactly one wins.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.store.engine import READONLY, writing
from app.store.schema import workflow_events, workflow_runs, workflow_steps

__all__ = ["LIVE", "MAIN", "Run", "Step"]

#: The ``branch`` of a main-line step.
MAIN = -1
#: The states of a run that has not finished.
LIVE = ("pending", "running", "waiting")
FINISHED = ("completed", "failed", "cancelled")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Step:
    """One recorded step (or branch of a parallel step)."""

    position: int
    branch: int
    name: str
    kind: str
    state: str
    result: str | None
    started_ms: int
    finished_ms: int | None
    wake_ms: int | None
    event_id: str | None
    attempts: int
    lease_message: str | None = None
    lease_until_ms: int | None = None


@dataclass(frozen=True)
class Run:
    """A run as stored, with its steps when they were read too."""

    id: str
    workflow: str
    state: str
    input: str
    output: str | None
    error: str | None
    failed_step: str | None
    position: int
    waiting_for: str | None
    created_ms: int
    updated_ms: int
    finished_ms: int | None
    lease_message: str | None
    lease_until_ms: int | None
    steps: tuple[Step, ...] = field(default=(), repr=False)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


_RUN_COLUMNS = [c for c in workflow_runs.c if c.name not in ("lease_token",)]
_STEP_COLUMNS = [c for c in workflow_steps.c if c.name not in ("run_id", "lease_token")]


def _run(row: Any, steps: Sequence[Step] = ()) -> Run:
    return Run(**{c.name: row._mapping[c.name] for c in _RUN_COLUMNS}, steps=tuple(steps))


def _step(row: Any) -> Step:
    return Step(**{c.name: row._mapping[c.name] for c in _STEP_COLUMNS})


def read(engine: Engine) -> Connection:
    """A read-only connection (no write lock on SQLite)."""
    return engine.connect().execution_options(**{READONLY: True})


def load(conn: Connection, run_id: str, *, with_steps: bool = True) -> Run | None:
    """Return the run ``run_id`` (with every step, main line then branches), or None."""
    row = conn.execute(select(*_RUN_COLUMNS).where(workflow_runs.c.id == run_id)).first()
    if row is None:
        return None
    if not with_steps:
        return _run(row)
    query = (
        select(*_STEP_COLUMNS)
        .where(workflow_steps.c.run_id == run_id)
        .order_by(workflow_steps.c.position, workflow_steps.c.branch)
    )
    return _run(row, [_step(step) for step in conn.execute(query)])


def get(engine: Engine, run_id: str, *, with_steps: bool = True) -> Run | None:
    with read(engine) as conn:
        return load(conn, run_id, with_steps=with_steps)


def summary(engine: Engine, run_id: str, chars: int) -> Run | None:
    """Return the run without its steps, its input, output and error cut to ``chars`` + 1
    characters by the database (the one more says it was cut): what a page or a terminal
    shows, never a megabyte read whole."""
    runs_ = workflow_runs.c
    cut = [
        func.substr(column, 1, chars + 1).label(column.name)
        for column in (runs_.input, runs_.output, runs_.error)
    ]
    columns = [c for c in _RUN_COLUMNS if c.name not in ("input", "output", "error")]
    with read(engine) as conn:
        row = conn.execute(select(*columns, *cut).where(runs_.id == run_id)).first()
    return None if row is None else _run(row)


def step_page(
    engine: Engine, run_id: str, start: int, rows: int, chars: int
) -> tuple[list[Step], int | None]:
    """Return up to ``rows`` step rows from position ``start``, results cut to ``chars`` + 1
    characters, and the position the next page starts at (None: no more). A position's
    rows (a parallel step and its branches, at most 101) are never split between pages."""
    steps = workflow_steps.c
    columns = [
        func.substr(steps.result, 1, chars + 1).label("result") if c.name == "result" else c
        for c in _STEP_COLUMNS
    ]
    query = (
        select(*columns)
        .where(steps.run_id == run_id, steps.position >= start)
        .order_by(steps.position, steps.branch)
        .limit(rows + 1)
    )
    with read(engine) as conn:
        found = [_step(row) for row in conn.execute(query)]
    if len(found) <= rows:
        return found, None
    cut = found[rows].position
    return [row for row in found if row.position < cut], cut


def runs(
    engine: Engine,
    *,
    workflow: str | None = None,
    state: str | None = None,
    limit: int = 50,
    before: tuple[int, str] | None = None,
) -> list[Run]:
    """Return the newest runs (without their steps), newest first; with ``before``
    (``created_ms``, ``id``) of a listed run, the ones listed after it."""
    query = select(*_RUN_COLUMNS).order_by(
        workflow_runs.c.created_ms.desc(), workflow_runs.c.id.desc()
    )
    if workflow is not None:
        query = query.where(workflow_runs.c.workflow == workflow)
    if state is not None:
        query = query.where(workflow_runs.c.state == state)
    if before is not None:  # keyset paging: runs created in one millisecond are not skipped
        created, run_id = before
        runs_ = workflow_runs.c
        query = query.where(
            or_(runs_.created_ms < created, and_(runs_.created_ms == created, runs_.id < run_id))
        )
    with read(engine) as conn:
        return [_run(row) for row in conn.execute(query.limit(max(1, min(limit, 1000))))]


def counts(engine: Engine, *, workflow: str | None = None) -> dict[str, int]:
    """Return how many runs (of ``workflow``) are in each state."""
    query = select(workflow_runs.c.state, func.count()).group_by(workflow_runs.c.state)
    if workflow is not None:
        query = query.where(workflow_runs.c.workflow == workflow)
    with read(engine) as conn:
        return {state: int(n) for state, n in conn.execute(query)}


# --- the main line's lease --------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    """This delivery executes the run's main line until ``until_ms``."""

    run_id: str
    token: str
    message_id: str | None
    lease_ms: int


def create(
    engine: Engine,
    run_id: str,
    workflow: str,
    input_json: str,
    lease: Lease,
    *,
    started_ms: int | None = None,
) -> bool:
    """Insert a new run, already leased to ``lease``; False if the id exists.

    ``started_ms``: when ``start()`` was called, if earlier than now: the run's events
    count from then (an event notified before the start delivery arrived is not lost).
    """
    now = now_ms()
    created = now if started_ms is None else min(now, started_ms)
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    with writing(engine) as conn:
        # ON CONFLICT: two deliveries starting one run id at once, on any hosts, insert it
        # once; the other one finds the row and drives the run on instead.
        inserted = conn.execute(
            dialect.insert(workflow_runs)
            .values(
                id=run_id,
                workflow=workflow,
                state="running",
                input=input_json,
                position=0,
                created_ms=created,
                updated_ms=now,
                lease_token=lease.token,
                lease_message=lease.message_id,
                lease_until_ms=now + lease.lease_ms,
            )
            .on_conflict_do_nothing(index_elements=[workflow_runs.c.id])
            .returning(workflow_runs.c.id)
        )
        # The row returned says whether it was inserted: rowcount, through SQLAlchemy,
        # says 1 on PostgreSQL even when the conflict inserted nothing.
        return inserted.first() is not None


def acquire(engine: Engine, lease: Lease) -> bool:
    """Take the run's lease if it is live and nobody holds an unexpired one."""
    now = now_ms()
    runs_ = workflow_runs.c
    statement = (
        update(workflow_runs)
        .where(
            runs_.id == lease.run_id,
            runs_.state.in_(LIVE),
            or_(runs_.lease_token.is_(None), runs_.lease_until_ms < now),
        )
        .values(
            state="running",
            lease_token=lease.token,
            lease_message=lease.message_id,
            lease_until_ms=now + lease.lease_ms,
            updated_ms=now,
        )
    )
    with writing(engine) as conn:
        return bool(conn.execute(statement).rowcount)


def _held(lease: Lease) -> Any:
    return and_(workflow_runs.c.id == lease.run_id, workflow_runs.c.lease_token == lease.token)


class LeaseLost(Exception):
    """The run's lease expired and another delivery took it: this one must stop."""


def _renew(conn: Connection, lease: Lease, **values: Any) -> None:
    now = now_ms()
    statement = (
        update(workflow_runs)
        .where(_held(lease))
        .values(updated_ms=now, lease_until_ms=now + lease.lease_ms, **values)
    )
    if not conn.execute(statement).rowcount:
        raise LeaseLost(f"run {lease.run_id}: the lease was taken over")


def release(engine: Engine, lease: Lease, **values: Any) -> bool:
    """Give the lease up, setting ``values`` (state, output…) in the same write."""
    statement = (
        update(workflow_runs)
        .where(_held(lease))
        .values(
            lease_token=None, lease_message=None, lease_until_ms=None, updated_ms=now_ms(), **values
        )
    )
    with writing(engine) as conn:
        return bool(conn.execute(statement).rowcount)


def finish(engine: Engine, run_id: str, state: str, lease: Lease | None, **values: Any) -> bool:
    """Move a live run to ``state`` (completed, failed, cancelled) once; True if this did.

    With a lease, only its holder may; without one (cancel, a branch failing the run),
    whoever comes first.
    """
    now = now_ms()
    condition = [workflow_runs.c.id == run_id, workflow_runs.c.state.in_(LIVE)]
    if lease is not None:
        condition.append(workflow_runs.c.lease_token == lease.token)
    statement = (
        update(workflow_runs)
        .where(*condition)
        .values(
            state=state,
            finished_ms=now,
            updated_ms=now,
            waiting_for=None,
            lease_token=None,
            lease_message=None,
            lease_until_ms=None,
            **values,
        )
    )
    with writing(engine) as conn:
        return bool(conn.execute(statement).rowcount)


# --- steps -------------------------------------------------------------------------------


def record(engine: Engine, lease: Lease, step: dict[str, Any], *, position: int) -> None:
    """Record a main-line step (done, or waiting) and the run's new position, atomically."""
    with writing(engine) as conn:
        _renew(conn, lease, position=position)
        conn.execute(insert(workflow_steps).values(run_id=lease.run_id, branch=MAIN, **step))


def record_parallel(
    engine: Engine, lease: Lease, parent: dict[str, Any], branches: list[str], *, position: int
) -> None:
    """Record a waiting parallel step and one pending row per branch, atomically."""
    with writing(engine) as conn:
        _renew(conn, lease, position=position)
        conn.execute(insert(workflow_steps).values(run_id=lease.run_id, branch=MAIN, **parent))
        for number, name in enumerate(branches):
            conn.execute(
                insert(workflow_steps).values(
                    run_id=lease.run_id,
                    position=parent["position"],
                    branch=number,
                    name=name,
                    kind="run",
                    state="pending",
                    started_ms=parent["started_ms"],
                )
            )


def set_waiting(engine: Engine, lease: Lease, waiting_for: str) -> None:
    release(engine, lease, state="waiting", waiting_for=waiting_for)


def resolve(
    engine: Engine, run_id: str, position: int, result: str | None, *, kind: str | None = None
) -> bool:
    """Mark a waiting main-line step done with ``result``, if it still waits."""
    steps = workflow_steps.c
    condition = [
        steps.run_id == run_id,
        steps.position == position,
        steps.branch == MAIN,
        steps.state == "waiting",
    ]
    if kind is not None:
        condition.append(steps.kind == kind)
    statement = (
        update(workflow_steps)
        .where(*condition)
        .values(state="done", result=result, finished_ms=now_ms())
    )
    with writing(engine) as conn:
        return bool(conn.execute(statement).rowcount)


def _the_step(run_id: str, position: int, branch: int) -> tuple[Any, Any, Any]:
    steps = workflow_steps.c
    return steps.run_id == run_id, steps.position == position, steps.branch == branch


def step_row(engine: Engine, run_id: str, position: int, branch: int = MAIN) -> Step | None:
    query = select(*_STEP_COLUMNS).where(*_the_step(run_id, position, branch))
    with read(engine) as conn:
        row = conn.execute(query).first()
    return None if row is None else _step(row)


def branches(engine: Engine, run_id: str, position: int) -> list[Step]:
    steps = workflow_steps.c
    query = (
        select(*_STEP_COLUMNS)
        .where(steps.run_id == run_id, steps.position == position, steps.branch != MAIN)
        .order_by(steps.branch)
    )
    with read(engine) as conn:
        return [_step(row) for row in conn.execute(query)]


def claim_branch(
    engine: Engine, run_id: str, position: int, branch: int, token: str, message_id: str | None,
    lease_ms: int,
) -> bool:  # fmt: skip
    """Take a pending branch, or one whose runner's lease expired (its worker died)."""
    now = now_ms()
    steps = workflow_steps.c
    statement = (
        update(workflow_steps)
        .where(
            *_the_step(run_id, position, branch),
            or_(
                steps.state == "pending",
                and_(steps.state == "running", steps.lease_until_ms < now),
            ),
        )
        .values(
            state="running",
            lease_token=token,
            lease_message=message_id,
            lease_until_ms=now + lease_ms,
            attempts=steps.attempts + 1,
            started_ms=now,
        )
    )
    with writing(engine) as conn:
        return bool(conn.execute(statement).rowcount)


def end_branch(
    engine: Engine, run_id: str, position: int, branch: int, token: str, result: str | None
) -> bool:
    """Store a branch's result (done), or with ``result=None`` hand it back (pending)."""
    steps = workflow_steps.c
    values: dict[str, Any] = {"lease_token": None, "lease_message": None, "lease_until_ms": None}
    if result is None:
        values["state"] = "pending"
    else:
        values.update(state="done", result=result, finished_ms=now_ms())
    statement = (
        update(workflow_steps)
        .where(
            *_the_step(run_id, position, branch),
            steps.lease_token == token,
        )
        .values(**values)
    )
    with writing(engine) as conn:
        return bool(conn.execute(statement).rowcount)


# --- events ------------------------------------------------------------------------------


def latest_event(engine: Engine, event_id: str, since_ms: int) -> str | None:
    """Return the data of the newest event ``event_id`` notified at or after ``since_ms``."""
    events = workflow_events.c
    query = (
        select(events.data)
        .where(events.event_id == event_id, events.at_ms >= since_ms)
        .order_by(events.at_ms.desc(), events.id.desc())
        .limit(1)
    )
    with read(engine) as conn:
        data: str | None = conn.execute(query).scalar()
    return data


def add_event(engine: Engine, event_id: str, data: str, *, keep_ms: int) -> None:
    """Store an event (so a run that waits for it later still finds it); drop expired ones."""
    now = now_ms()
    events = workflow_events.c
    with writing(engine) as conn:
        conn.execute(insert(workflow_events).values(event_id=event_id, data=data, at_ms=now))
        # At most a page of expired events per notification: bounded work, and the table
        # cannot outgrow the notifications of one retention period.
        expired = select(events.id).where(events.at_ms < now - keep_ms).limit(100)
        conn.execute(delete(workflow_events).where(events.id.in_(expired.scalar_subquery())))


def waiting_for_event(
    engine: Engine, event_id: str, page: int = 500
) -> Iterator[tuple[str, int, str]]:
    """Yield ``(run_id, position, workflow)`` of every main-line step waiting for
    ``event_id``, in pages of ``page``."""
    steps = workflow_steps.c
    after: tuple[str, int] = ("", -1)
    while True:
        query = (
            select(steps.run_id, steps.position, workflow_runs.c.workflow)
            .join(workflow_runs, workflow_runs.c.id == steps.run_id)
            .where(
                steps.event_id == event_id,
                steps.state == "waiting",
                steps.kind == "event",
                steps.branch == MAIN,
                or_(
                    steps.run_id > after[0],
                    and_(steps.run_id == after[0], steps.position > after[1]),
                ),
            )
            .order_by(steps.run_id, steps.position)
            .limit(page)
        )
        with read(engine) as conn:
            rows = [(row.run_id, row.position, row.workflow) for row in conn.execute(query)]
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1][:2]


def expire(engine: Engine, before_ms: int, *, events_before_ms: int, limit: int = 1000) -> int:
    """Delete up to ``limit`` runs finished before ``before_ms`` with their steps, and up
    to ``limit`` events notified before ``events_before_ms``; return the runs deleted."""
    with writing(engine) as conn:
        old_events = (
            select(workflow_events.c.id)
            .where(workflow_events.c.at_ms < events_before_ms)
            .limit(limit)
        )
        conn.execute(
            delete(workflow_events).where(workflow_events.c.id.in_(old_events.scalar_subquery()))
        )
    runs_ = workflow_runs.c
    old = (
        select(runs_.id)
        .where(runs_.state.in_(FINISHED), runs_.finished_ms < before_ms)
        .limit(limit)
    )
    with writing(engine) as conn:
        ids = list(conn.execute(old).scalars())
        if ids:
            conn.execute(delete(workflow_steps).where(workflow_steps.c.run_id.in_(ids)))
            conn.execute(delete(workflow_runs).where(runs_.id.in_(ids)))
    return len(ids)
