"""Claims on (job, message id): the statements under the duplicate-delivery guard.

:func:`claim` is one ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` statement. It inserts
a new claim, or takes over a *running* claim whose lease expired, and returns the row as
it now stands: the caller won if the row carries the token it proposed; otherwise the row
says why not (done, with the stored answer, or running under another worker's lease).
PostgreSQL locks the conflicting row and evaluates the update on its newest version;
SQLite runs a writing statement under its database write lock. Either way, of any number
of processes on any number of hosts, exactly one wins a claim at a time, in one statement.

:data:`COMPLETE` and :data:`RELEASE` match the claim's token, so a worker whose claim was
taken over (its lease ran out while its handler ran) changes nothing.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, delete, select, tuple_, update
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


def _claim_statement(insert: Any) -> Any:
    stmt = insert(claims).values(
        job=bindparam("job"),
        message_id=bindparam("message_id"),
        state="running",
        token=bindparam("token"),
        lease_until_ms=bindparam("lease_until_ms"),
        claimed_at_ms=bindparam("now_ms"),
        takeovers=0,
    )
    new = stmt.excluded
    expired = and_(claims.c.state == "running", claims.c.lease_until_ms < new.claimed_at_ms)

    def if_expired(taken: Any, kept: Any) -> Any:
        # Every SET term reads the row as it was, so all four agree on ``expired``.
        return case((expired, taken), else_=kept)

    return stmt.on_conflict_do_update(
        index_elements=[claims.c.job, claims.c.message_id],
        set_={
            "token": if_expired(new.token, claims.c.token),
            "lease_until_ms": if_expired(new.lease_until_ms, claims.c.lease_until_ms),
            "claimed_at_ms": if_expired(new.claimed_at_ms, claims.c.claimed_at_ms),
            "takeovers": claims.c.takeovers + if_expired(1, 0),
        },
    ).returning(
        claims.c.token,
        claims.c.takeovers,
        claims.c.state,
        claims.c.lease_until_ms,
        claims.c.status,
        claims.c.content_type,
        claims.c.body,
    )


#: The claim, per dialect: the parameters of :func:`claim_params`.
CLAIM = {
    "postgresql": _claim_statement(postgresql.insert),
    "sqlite": _claim_statement(sqlite.insert),
}


def claim(conn: Connection, job: str, message_id: str, *, now_ms: int, lease_ms: int) -> Claim:
    """Claim (job, message_id) for ``lease_ms``, or say why not, in one statement."""
    params = claim_params(job, message_id, now_ms=now_ms, lease_ms=lease_ms)
    return verdict(conn.execute(CLAIM[conn.dialect.name], params).one(), params)


def claim_params(job: str, message_id: str, *, now_ms: int, lease_ms: int) -> dict[str, Any]:
    """Return the parameters of :data:`CLAIM`, with a new token."""
    return {
        "job": job,
        "message_id": message_id,
        "token": secrets.token_hex(16),
        "lease_until_ms": now_ms + lease_ms,
        "now_ms": now_ms,
    }


def verdict(row: Any, params: dict[str, Any]) -> Claim:
    """Say what the row :data:`CLAIM` returned means for the claimant of ``params``."""
    token, takeovers, state, lease_until_ms, status, content_type, body = row
    if token == params["token"]:
        return Acquired(token=token, takeover=takeovers > 0)
    if state == "done":
        return Completed(status=status, content_type=content_type, body=bytes(body or b""))
    seconds = math.ceil((lease_until_ms - params["now_ms"]) / 1000)
    return Busy(retry_after=max(1, seconds))


_MINE = and_(
    claims.c.job == bindparam("b_job"),
    claims.c.message_id == bindparam("b_message_id"),
    claims.c.token == bindparam("b_token"),
)
#: Mark a claim done with its answer: the parameters of :func:`completion`.
COMPLETE = (
    update(claims)
    .where(_MINE)
    .values(
        state="done",
        completed_at_ms=bindparam("b_completed_at_ms"),
        status=bindparam("b_status"),
        content_type=bindparam("b_content_type"),
        body=bindparam("b_body"),
    )
)
#: Give a claim up, so that the next delivery runs the handler: :func:`ours`' parameters.
RELEASE = delete(claims).where(_MINE)


def ours(job: str, message_id: str, token: str) -> dict[str, Any]:
    """Return the parameters that name our claim, for :data:`RELEASE`."""
    return {"b_job": job, "b_message_id": message_id, "b_token": token}


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
    """Return the parameters of :data:`COMPLETE` for one answered delivery."""
    return {
        **ours(job, message_id, token),
        "b_completed_at_ms": now_ms,
        "b_status": status,
        "b_content_type": content_type,
        "b_body": body,
    }


def complete(conn: Connection, job: str, message_id: str, token: str, **answer: Any) -> bool:
    """Mark our claim done with its answer (:func:`completion`'s keywords); False if
    another process took it over."""
    return conn.execute(COMPLETE, completion(job, message_id, token, **answer)).rowcount == 1


def release(conn: Connection, job: str, message_id: str, token: str) -> bool:
    """Give our claim up so the next delivery runs the handler; False if it was lost."""
    return conn.execute(RELEASE, ours(job, message_id, token)).rowcount == 1


def write(
    conn: Connection, completions: list[dict[str, Any]], releases: list[dict[str, Any]]
) -> list[tuple[str, str]]:
    """Write queued completions (:func:`completion`'s parameters) and releases
    (:func:`ours`'); return (job, message id) of each whose claim had been taken over."""
    lost = [
        (p["b_job"], p["b_message_id"])
        for p in releases
        if conn.execute(RELEASE, p).rowcount != 1  # one by one: after failures only
    ]
    if completions and conn.execute(COMPLETE, completions).rowcount != len(completions):
        # Rare: some claim was taken over. Ask the table which, by key.
        keys = [(p["b_job"], p["b_message_id"]) for p in completions]
        query = select(claims.c.job, claims.c.message_id, claims.c.token).where(
            tuple_(claims.c.job, claims.c.message_id).in_(keys)
        )
        tokens = {(job, message_id): token for job, message_id, token in conn.execute(query)}
        lost += [
            key for key, p in zip(keys, completions, strict=True) if tokens.get(key) != p["b_token"]
        ]
    return lost
