"""Claims on (job, message id): the atomic primitive under the duplicate-delivery guard.

``claim()`` is one ``INSERT … ON CONFLICT DO UPDATE … WHERE`` statement: it inserts a new
claim, or takes over a *running* claim whose lease expired, and returns a row only when it
won. PostgreSQL locks the conflicting row and re-checks the ``WHERE`` on its newest
version; SQLite runs it inside ``BEGIN IMMEDIATE``. Either way, of any number of
processes on any number of hosts, exactly one wins a claim at a time.
"""

from __future__ import annotations

import functools
import math
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect, and_, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.store.engine import execute as _execute
from app.store.engine import execute_many
from app.store.schema import claims

SUPPORTED_DIALECTS = ("postgresql", "sqlite")


@dataclass(frozen=True)
class Acquired:
    """This process holds the claim until it completes or releases it."""

    token: str
    takeover: bool


@dataclass(frozen=True)
class Completed:
    """The message was handled before; its stored answer."""

    status: int
    content_type: str | None
    body: bytes


@dataclass(frozen=True)
class Busy:
    """Another process holds a live claim for ``retry_after`` more seconds."""

    retry_after: int


Claim = Acquired | Completed | Busy


def _driver(conn: Connection) -> Any:
    return conn.connection.driver_connection


@functools.cache
def _claim_statement(dialect: str) -> Any:
    # Built once per dialect and reused: constructing this statement costs far more
    # than running it.
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(claims).values(
        job=bindparam("job"),
        message_id=bindparam("message_id"),
        state="running",
        token=bindparam("token"),
        lease_until_ms=bindparam("lease_until_ms"),
        claimed_at_ms=bindparam("now_ms"),
        takeovers=0,
    )
    return stmt.on_conflict_do_update(
        index_elements=[claims.c.job, claims.c.message_id],
        set_={
            "token": stmt.excluded.token,
            "lease_until_ms": stmt.excluded.lease_until_ms,
            "claimed_at_ms": stmt.excluded.claimed_at_ms,
            "takeovers": claims.c.takeovers + 1,
        },
        where=and_(claims.c.state == "running", claims.c.lease_until_ms < bindparam("now_ms")),
    ).returning(claims.c.takeovers)


def claim(conn: Connection, job: str, message_id: str, *, now_ms: int, lease_ms: int) -> Claim:
    """Claim (job, message_id) for ``lease_ms``, or say why not, in ``conn``'s transaction."""
    return claim_on(_driver(conn), conn.dialect, job, message_id, now_ms=now_ms, lease_ms=lease_ms)


def claim_on(
    driver: Any, dialect: Dialect, job: str, message_id: str, *, now_ms: int, lease_ms: int
) -> Claim:
    """:func:`claim` on a DBAPI connection inside a write transaction."""
    statement = _claim_statement(dialect.name)
    for _ in range(3):  # a claim released between our two statements: try again
        token = secrets.token_hex(16)
        params = {
            "job": job,
            "message_id": message_id,
            "token": token,
            "lease_until_ms": now_ms + lease_ms,
            "now_ms": now_ms,
        }
        won = _execute(driver, dialect, statement, params).fetchone()
        if won is not None:
            return Acquired(token=token, takeover=won[0] > 0)
        found = _existing(driver, dialect, job, message_id, now_ms)
        if found is not None:
            return found
    return Busy(retry_after=1)


_EXISTING = select(
    claims.c.state,
    claims.c.lease_until_ms,
    claims.c.status,
    claims.c.content_type,
    claims.c.body,
).where(claims.c.job == bindparam("job"), claims.c.message_id == bindparam("message_id"))


def _existing(
    driver: Any,
    dialect: Dialect,
    job: str,
    message_id: str,
    now_ms: int,
    *,
    live_only: bool = False,
) -> Claim | None:
    params = {"job": job, "message_id": message_id}
    row = _execute(driver, dialect, _EXISTING, params).fetchone()
    if row is None:
        return None
    state, lease_until_ms, status, content_type, body = row
    if state == "done":
        return Completed(status=status, content_type=content_type, body=bytes(body or b""))
    if live_only and lease_until_ms < now_ms:
        return None
    return Busy(retry_after=max(1, math.ceil((lease_until_ms - now_ms) / 1000)))


_MINE = and_(
    claims.c.job == bindparam("b_job"),
    claims.c.message_id == bindparam("b_message_id"),
    claims.c.token == bindparam("b_token"),
)
_COMPLETE = (
    update(claims)
    .where(_MINE)
    .values(
        state="done",
        completed_at_ms=bindparam("now_ms"),
        status=bindparam("b_status"),
        content_type=bindparam("b_content_type"),
        body=bindparam("b_body"),
    )
)
_RELEASE = delete(claims).where(_MINE)


def complete(conn: Connection, job: str, message_id: str, token: str, **answer: Any) -> bool:
    """Mark our claim done with its answer (:func:`completion`'s keywords); False if
    another process took it over."""
    params = completion(job, message_id, token, **answer)
    return bool(complete_on(_driver(conn), conn.dialect, params).rowcount == 1)


def completion(
    job: str,
    message_id: str,
    token: str,
    *,
    now_ms: int,
    status: int,
    content_type: str | None,
    body: bytes,
) -> dict[str, Any]:
    """Return the parameters of :func:`complete_on` for one answered delivery."""
    return {
        "b_job": job,
        "b_message_id": message_id,
        "b_token": token,
        "now_ms": now_ms,
        "b_status": status,
        "b_content_type": content_type,
        "b_body": body,
    }


def complete_on(driver: Any, dialect: Dialect, params: dict[str, Any]) -> Any:
    """:func:`complete` on a DBAPI connection with :func:`completion`'s parameters.

    Return the cursor: its ``rowcount`` is 1 if the claim was still ours, once known
    (in a PostgreSQL pipeline, after the pipeline synced).
    """
    return _execute(driver, dialect, _COMPLETE, params)


def release(conn: Connection, job: str, message_id: str, token: str) -> bool:
    """Give our claim up so the next delivery runs the handler; False if it was lost."""
    return bool(release_on(_driver(conn), conn.dialect, job, message_id, token).rowcount == 1)


def release_on(driver: Any, dialect: Dialect, job: str, message_id: str, token: str) -> Any:
    """:func:`release` on a DBAPI connection; return the cursor (see :func:`complete_on`)."""
    params = {"b_job": job, "b_message_id": message_id, "b_token": token}
    return _execute(driver, dialect, _RELEASE, params)


_DONE_COLUMNS = (
    "state",
    "token",
    "lease_until_ms",
    "completed_at_ms",
    "status",
    "content_type",
    "body",
)


@functools.cache
def _record_done_statement() -> Any:
    # A claim held outside the table (a kernel lock, see ``HostClaimer``), recorded as
    # done. It may replace a running row whose lease expired, never a done row.
    stmt = sqlite.insert(claims).values(
        job=bindparam("b_job"),
        message_id=bindparam("b_message_id"),
        state="done",
        token=bindparam("b_token"),
        lease_until_ms=bindparam("now_ms"),
        claimed_at_ms=bindparam("b_claimed_at_ms"),
        completed_at_ms=bindparam("now_ms"),
        takeovers=0,
        status=bindparam("b_status"),
        content_type=bindparam("b_content_type"),
        body=bindparam("b_body"),
    )
    return stmt.on_conflict_do_update(
        index_elements=[claims.c.job, claims.c.message_id],
        set_={name: stmt.excluded[name] for name in _DONE_COLUMNS},
        where=claims.c.state == "running",
    )


def record_done_on(driver: Any, dialect: Dialect, rows: list[dict[str, Any]]) -> None:
    """Insert done rows (:func:`completion`'s parameters plus ``b_claimed_at_ms``); SQLite."""
    execute_many(driver, dialect, _record_done_statement(), rows)


def read_on(driver: Any, dialect: Dialect, job: str, message_id: str, now_ms: int) -> Claim | None:
    """Say what the table holds for (job, message_id): done, running under a lease, or None."""
    params = {"job": job, "message_id": message_id}
    # Nearly always nothing: ask for the answer's columns only when there is one.
    if _execute(driver, dialect, _STATE, params).fetchone() is None:
        return None
    return _existing(driver, dialect, job, message_id, now_ms, live_only=True)


_STATE = select(claims.c.state).where(
    claims.c.job == bindparam("job"), claims.c.message_id == bindparam("message_id")
)
