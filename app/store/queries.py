"""Read and expire the delivery log: what the dashboard and the cron jobs ask of it.

Every function takes a ``Connection`` and epoch milliseconds; none writes except
``expire`` and ``record_dlq``. Percentiles use PostgreSQL's ``percentile_cont`` there and
are computed in Python on SQLite, which has no such aggregate.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import (
    ColumnElement,
    Connection,
    Update,
    and_,
    case,
    delete,
    func,
    or_,
    select,
    update,
)

from app.store.schema import UNSUCCESSFUL, claims, deliveries

DAY_MS = 86_400_000

#: Rows of verified deliveries. Before issue 12 the log also stored requests refused
#: before verification (401s, and 489s for a body over QSTASH_MAX_BODY_SIZE): their
#: message id is whatever an unauthenticated caller sent, so no query shows those rows.
VERIFIED = and_(
    deliveries.c.outcome != "bad-signature",
    or_(
        deliveries.c.error.is_(None),
        deliveries.c.error.not_like("payload_too_large: the body is larger than %"),
    ),
)

#: A failed attempt: anything but 2xx that the handler (not the guard) answered.
# UNSUCCESSFUL, not a bound ``outcome != 'ok'``: the message-id index covers exactly
# those rows, and a planner can only use it when the query repeats its condition.
FAILED = and_(UNSUCCESSFUL, deliveries.c.guard.is_(None), VERIFIED)


@dataclass(frozen=True)
class JobStats:
    """Counts and durations of one job's deliveries in a time window."""

    job: str
    total: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    last_at_ms: int

    @property
    def failure_rate(self) -> float:
        """Return failures / total (0 when nothing was delivered)."""
        return self.failures / self.total if self.total else 0.0


@dataclass(frozen=True)
class Failure:
    """One failed delivery attempt, for the dashboard and the digest."""

    at_ms: int
    job: str
    message_id: str | None
    retried: int
    outcome: str
    status: int
    error: str | None
    dlq_id: str | None


def _window(since_ms: int, until_ms: int) -> ColumnElement[bool]:
    return and_(deliveries.c.at_ms >= since_ms, deliveries.c.at_ms < until_ms, VERIFIED)


def job_stats(conn: Connection, since_ms: int, until_ms: int) -> list[JobStats]:
    """Return per-job totals, failures and p50/p95 duration in [since, until)."""
    failed = func.sum(case((FAILED, 1), else_=0))
    rows = conn.execute(
        select(
            deliveries.c.job,
            func.count(),
            failed,
            func.max(deliveries.c.at_ms),
        )
        .where(_window(since_ms, until_ms))
        .group_by(deliveries.c.job)
        .order_by(deliveries.c.job)
    ).all()
    percentiles = _percentiles(conn, since_ms, until_ms)
    return [
        JobStats(job, total, int(failures or 0), *percentiles.get(job, (None, None)), last)
        for job, total, failures, last in rows
    ]


def _percentiles(
    conn: Connection, since_ms: int, until_ms: int
) -> dict[str, tuple[float | None, float | None]]:
    duration = deliveries.c.duration_ms
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            select(
                deliveries.c.job,
                func.percentile_cont(0.5).within_group(duration),
                func.percentile_cont(0.95).within_group(duration),
            )
            .where(_window(since_ms, until_ms))
            .group_by(deliveries.c.job)
        ).all()
        return {job: (p50, p95) for job, p50, p95 in rows}
    values: dict[str, list[float]] = defaultdict(list)
    query = select(deliveries.c.job, duration).where(_window(since_ms, until_ms))
    for job, value in conn.execute(query.order_by(duration)):
        values[job].append(value)
    return {job: (percentile(v, 0.5), percentile(v, 0.95)) for job, v in values.items()}


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Return the ``fraction`` percentile of sorted values, interpolated like PostgreSQL."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def series(
    conn: Connection, since_ms: int, until_ms: int, bucket_ms: int, *, failed_only: bool = False
) -> dict[str, list[int]]:
    """Return deliveries (or failed attempts) per job per bucket of ``bucket_ms``."""
    buckets = max(1, math.ceil((until_ms - since_ms) / bucket_ms))
    index = (deliveries.c.at_ms - since_ms) // bucket_ms
    query = (
        select(deliveries.c.job, index.label("bucket"), func.count())
        .where(_window(since_ms, until_ms))
        .group_by(deliveries.c.job, "bucket")
    )
    rows = conn.execute(query.where(FAILED) if failed_only else query).all()
    result: dict[str, list[int]] = {}
    for job, bucket, count in rows:
        counts = result.setdefault(job, [0] * buckets)
        counts[min(int(bucket), buckets - 1)] += count
    return dict(sorted(result.items()))


def latest_failures(
    conn: Connection,
    limit: int = 20,
    since_ms: int = 0,
    until_ms: int | None = None,
    *,
    job: str | None = None,
) -> list[Failure]:
    """Return the newest failed attempts (of every job, or of ``job``), newest first."""
    query = select(
        deliveries.c.at_ms,
        deliveries.c.job,
        deliveries.c.message_id,
        deliveries.c.retried,
        deliveries.c.outcome,
        deliveries.c.status,
        deliveries.c.error,
        deliveries.c.dlq_id,
    ).where(FAILED, deliveries.c.at_ms >= since_ms)
    if until_ms is not None:
        query = query.where(deliveries.c.at_ms < until_ms)
    if job is not None:
        query = query.where(deliveries.c.job == job)
    rows = conn.execute(query.order_by(deliveries.c.at_ms.desc()).limit(limit))
    return [Failure(*row) for row in rows]


def first_attempt_ms(conn: Connection, job: str, message_id: str) -> int | None:
    """Return when the log first saw ``message_id`` delivered to ``job`` unsuccessfully
    (epoch ms), if ever.

    A handler runs again only after attempts that did not succeed (the duplicate guard
    replays a success), so the first of those is the first attempt; the message-id
    index covers exactly those rows.
    """
    return conn.execute(
        select(func.min(deliveries.c.at_ms)).where(
            deliveries.c.message_id == message_id,
            UNSUCCESSFUL,
            deliveries.c.job == job,
            VERIFIED,
        )
    ).scalar()


def record_dlq(conn: Connection, message_id: str, dlq_id: str) -> int:
    """Attach QStash's DLQ id to the failed attempts of ``message_id``; return how many."""
    result = conn.execute(dlq_update(message_id, dlq_id))
    return result.rowcount


def dlq_update(message_id: str, dlq_id: str) -> Update:
    """The statement of :func:`record_dlq`: through the partial message-id index, as
    ``FAILED`` repeats its condition."""
    return (
        update(deliveries)
        .where(deliveries.c.message_id == message_id, FAILED)
        .values(dlq_id=dlq_id[:200])
    )


def expire(conn: Connection, now_ms: int, *, log_days: float, claim_days: float) -> tuple[int, int]:
    """Delete log rows and finished claims past retention; return (rows, claims) deleted."""
    rows = conn.execute(delete(deliveries).where(deliveries.c.at_ms < now_ms - log_days * DAY_MS))
    done = conn.execute(
        delete(claims).where(
            or_(
                and_(
                    claims.c.state == "done",
                    claims.c.completed_at_ms < now_ms - claim_days * DAY_MS,
                ),
                # A running claim this old belongs to nobody: its lease expired long ago.
                and_(
                    claims.c.state == "running",
                    claims.c.lease_until_ms < now_ms - claim_days * DAY_MS,
                ),
            )
        )
    )
    return rows.rowcount, done.rowcount
