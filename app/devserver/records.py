"""The dev server's records: messages, attempts, DLQ entries, schedules, queues.

Plain frozen dataclasses, and how each is read back from its SQLite row; the store
(``store.py``) writes them, everything else passes them around.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """A message waiting for delivery: its publish spec, raw body and retry state."""

    id: str
    spec: dict[str, Any]
    body: bytes
    retried: int
    due: float


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one delivery attempt."""

    retried: int
    status: int | None
    error: str | None
    latency_ms: float
    at: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that exhausted its retries, with the endpoint's last response."""

    dlq_id: str
    message: Message
    response_status: int | None
    response_headers: dict[str, list[str]]
    response_body: bytes
    created: float
    #: Its place in the DLQ's order, which a ``cursor`` continues after.
    seq: int


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron schedule: the message it publishes and when it fires next."""

    id: str
    spec: dict[str, Any]
    body: bytes
    paused: bool
    created: float
    next_at: float
    last_at: float | None


@dataclass(frozen=True, slots=True)
class Queue:
    """A named FIFO queue with a parallelism limit."""

    name: str
    parallelism: int
    paused: bool
    created: float
    updated: float


def new_id(prefix: str) -> str:
    """Return a fresh random id like QStash's (``msg_…``, ``scd_…``)."""
    return f"{prefix}_{os.urandom(20).hex()}"


def labels(spec: dict[str, Any]) -> list[str]:
    """Return the labels a message was published with: ``Upstash-Label: a,b`` is two."""
    return [part.strip() for part in (spec.get("label") or "").split(",") if part.strip()]


def message_from_row(row: tuple[Any, ...]) -> Message:
    """Return the message of a ``messages`` row (id, spec, body, retried, due)."""
    return Message(
        id=row[0], spec=json.loads(row[1]), body=bytes(row[2]), retried=row[3], due=row[4]
    )


def dead_letter_from_row(row: tuple[Any, ...]) -> DeadLetter:
    """Return the DLQ entry of a ``dlq`` row (its columns, then its rowid)."""
    spec = json.loads(row[2])
    message = Message(
        id=row[1], spec=spec, body=bytes(row[3]), retried=spec.get("retried", 0), due=0
    )
    return DeadLetter(
        dlq_id=row[0],
        message=message,
        response_status=row[4],
        response_headers=json.loads(row[5]),
        response_body=bytes(row[6]),
        created=row[7],
        seq=row[8],
    )


def schedule_from_row(row: tuple[Any, ...]) -> Schedule:
    """Return the schedule of a ``schedules`` row."""
    return Schedule(
        id=row[0],
        spec=json.loads(row[1]),
        body=bytes(row[2]),
        paused=bool(row[3]),
        created=row[4],
        next_at=row[5],
        last_at=row[6],
    )


def queue_from_row(row: tuple[Any, ...]) -> Queue:
    """Return the queue of a ``queues`` row."""
    return Queue(
        name=row[0], parallelism=row[1], paused=bool(row[2]), created=row[3], updated=row[4]
    )
