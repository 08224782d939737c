"""Claims on (job, message id): the atomic primitive under the duplicate-delivery guard.

``claim()`` is one ``INSERT … ON CONFLICT DO UPDATE … WHERE`` statement: it inserts a new
claim, or takes over a *running* claim whose lease expired, and returns a row only when it
won. PostgreSQL locks the conflicting row and re-checks the ``WHERE`` on its newest
version; SQLite runs it inside ``BEGIN IMMEDIATE``. Either way, of any number of
processes on any number of hosts, exactly one wins a claim at a time.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

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


def _insert(conn: Connection) -> Callable[..., Any]:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def claim(conn: Connection, job: str, message_id: str, *, now_ms: int, lease_ms: int) -> Claim:
    """Claim (job, message_id) for ``lease_ms``, or say why not; one transaction."""
    for _ in range(3):  # a claim released between our two statements: try again
        token = secrets.token_hex(16)
        stmt = _insert(conn)(claims).values(
            job=job,
            message_id=message_id,
            state="running",
            token=token,
            lease_until_ms=now_ms + lease_ms,
            claimed_at_ms=now_ms,
            takeovers=0,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[claims.c.job, claims.c.message_id],
            set_={
                "token": stmt.excluded.token,
                "lease_until_ms": stmt.excluded.lease_until_ms,
                "claimed_at_ms": stmt.excluded.claimed_at_ms,
                "takeovers": claims.c.takeovers + 1,
            },
            where=and_(claims.c.state == "running", claims.c.lease_until_ms < now_ms),
        ).returning(claims.c.takeovers)
        won = conn.execute(stmt).first()
        if won is not None:
            return Acquired(token=token, takeover=won.takeovers > 0)
        found = _existing(conn, job, message_id, now_ms)
        if found is not None:
            return found
    return Busy(retry_after=1)


def _existing(conn: Connection, job: str, message_id: str, now_ms: int) -> Claim | None:
    row = conn.execute(
        select(
            claims.c.state,
            claims.c.lease_until_ms,
            claims.c.status,
            claims.c.content_type,
            claims.c.body,
        ).where(claims.c.job == job, claims.c.message_id == message_id)
    ).first()
    if row is None:
        return None
    if row.state == "done":
        return Completed(status=row.status, content_type=row.content_type, body=row.body or b"")
    return Busy(retry_after=max(1, math.ceil((row.lease_until_ms - now_ms) / 1000)))


def _mine(job: str, message_id: str, token: str) -> ColumnElement[bool]:
    return and_(claims.c.job == job, claims.c.message_id == message_id, claims.c.token == token)


def complete(
    conn: Connection,
    job: str,
    message_id: str,
    token: str,
    *,
    now_ms: int,
    status: int,
    content_type: str | None,
    body: bytes,
) -> bool:
    """Mark our claim done with its answer; False if another process took it over."""
    result = conn.execute(
        update(claims)
        .where(_mine(job, message_id, token))
        .values(
            state="done",
            completed_at_ms=now_ms,
            status=status,
            content_type=content_type,
            body=body,
        )
    )
    return result.rowcount == 1


def release(conn: Connection, job: str, message_id: str, token: str) -> bool:
    """Give our claim up so the next delivery runs the handler; False if it was lost."""
    return conn.execute(delete(claims).where(_mine(job, message_id, token))).rowcount == 1
