"""The dev server's state in SQLite (WAL): messages, attempts, DLQ, schedules, queues, dedup.

A message row exists from the moment its publish is answered until its final outcome
(delivered, dead-lettered, cancelled) is committed, so a server killed at any point finds
every unfinished message on restart and delivers it again (at least once). One connection
behind a lock serves all threads: SQLite serialises writers anyway, and this keeps
``SQLITE_BUSY`` out of the picture.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from app.devserver.records import (
    Attempt,
    DeadLetter,
    Message,
    Queue,
    Schedule,
    dead_letter_from_row,
    message_from_row,
    new_id,
    queue_from_row,
    schedule_from_row,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, spec TEXT NOT NULL, body BLOB NOT NULL, queue TEXT,
    retried INTEGER NOT NULL DEFAULT 0, due REAL NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS messages_queue ON messages(queue);
CREATE TABLE IF NOT EXISTS attempts (
    message_id TEXT NOT NULL, retried INTEGER NOT NULL, status INTEGER, error TEXT,
    latency_ms REAL NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS attempts_message ON attempts(message_id);
CREATE TABLE IF NOT EXISTS dlq (
    dlq_id TEXT PRIMARY KEY, message_id TEXT NOT NULL, spec TEXT NOT NULL, body BLOB NOT NULL,
    response_status INTEGER, response_headers TEXT NOT NULL, response_body BLOB NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY, spec TEXT NOT NULL, body BLOB NOT NULL, paused INTEGER NOT NULL,
    created REAL NOT NULL, next_at REAL NOT NULL, last_at REAL);
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY, parallelism INTEGER NOT NULL, paused INTEGER NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dedup (key TEXT PRIMARY KEY, message_id TEXT NOT NULL,
    expires REAL NOT NULL);
"""


class Store:
    """Thread-safe access to the dev server's SQLite database."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL survives a killed process (not a power cut), at a fraction of FULL's cost.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    # Tables other modules own (events, URL groups) go through these two, on this connection.
    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """Return a locked ``BEGIN IMMEDIATE`` transaction on the store's connection."""
        return self._tx()

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """Run one statement under the store's lock and return its rows."""
        return self._query(sql, params)

    # -- messages ---------------------------------------------------------------------

    def publish(
        self, messages: list[tuple[Message, str | None]], *, now: float, window: float
    ) -> list[tuple[str, bool]]:
        """Insert messages atomically; one with a live dedup key answers the first's id."""
        answers: list[tuple[str, bool]] = []
        with self._tx() as db:
            db.execute("DELETE FROM dedup WHERE expires <= ?", (now,))
            for message, dedup_key in messages:
                if dedup_key is not None:
                    row = db.execute(
                        "SELECT message_id FROM dedup WHERE key = ?", (dedup_key,)
                    ).fetchone()
                    if row is not None:
                        answers.append((row[0], True))
                        continue
                    db.execute(
                        "INSERT INTO dedup VALUES (?, ?, ?)", (dedup_key, message.id, now + window)
                    )
                _insert_message(db, message, now)
                answers.append((message.id, False))
        return answers

    def load(self, message_id: str) -> Message | None:
        """Return the pending message ``message_id``, or None once it is finished."""
        rows = self._query(
            "SELECT id, spec, body, retried, due FROM messages WHERE id = ?", (message_id,)
        )
        return message_from_row(rows[0]) if rows else None

    def pending(self) -> list[Message]:
        """Return every unfinished message, oldest first (the restart backlog)."""
        rows = self._query("SELECT id, spec, body, retried, due FROM messages ORDER BY rowid")
        return [message_from_row(row) for row in rows]

    def delivered(self, outcomes: list[tuple[str, Attempt]]) -> None:
        """Record successful final attempts and forget their messages, in one transaction."""
        with self._tx() as db:
            db.executemany(
                "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?)",
                [(m, a.retried, a.status, a.error, a.latency_ms, a.at) for m, a in outcomes],
            )
            db.executemany("DELETE FROM messages WHERE id = ?", [(m,) for m, _ in outcomes])

    def reschedule(self, message_id: str, attempt: Attempt, *, retried: int, due: float) -> None:
        """Record a failed attempt and set when the next one is due."""
        with self._tx() as db:
            _insert_attempt(db, message_id, attempt)
            db.execute(
                "UPDATE messages SET retried = ?, due = ? WHERE id = ?", (retried, due, message_id)
            )

    def dead_letter(
        self,
        message: Message,
        attempt: Attempt,
        *,
        headers: dict[str, list[str]],
        body: bytes,
    ) -> str:
        """Move ``message`` to the DLQ with the endpoint's last response; return the dlqId."""
        dlq_id = new_id("dlq")
        with self._tx() as db:
            _insert_attempt(db, message.id, attempt)
            db.execute("DELETE FROM messages WHERE id = ?", (message.id,))
            spec = {**message.spec, "retried": attempt.retried}
            db.execute(
                "INSERT INTO dlq VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    dlq_id,
                    message.id,
                    json.dumps(spec),
                    message.body,
                    attempt.status,
                    json.dumps(headers),
                    body,
                    attempt.at,
                ),
            )
        return dlq_id

    def cancel(self, message_ids: list[str]) -> list[str]:
        """Delete the pending messages among ``message_ids``; return the ids deleted."""
        with self._tx() as db:
            return [
                i
                for i in message_ids
                if db.execute("DELETE FROM messages WHERE id = ?", (i,)).rowcount > 0
            ]

    def attempts(self, message_id: str) -> list[Attempt]:
        """Return the attempts made for ``message_id``, in order."""
        rows = self._query(
            "SELECT retried, status, error, latency_ms, at FROM attempts"
            " WHERE message_id = ? ORDER BY rowid",
            (message_id,),
        )
        return [Attempt(*row) for row in rows]

    def lag(self, queue: str) -> int:
        """Return how many messages wait in ``queue``."""
        return int(self._query("SELECT count(*) FROM messages WHERE queue = ?", (queue,))[0][0])

    # -- dead-letter queue ----------------------------------------------------------------

    def dead_letters(self, *, after: int | None = None) -> list[DeadLetter]:
        """Return DLQ entries in creation order, those after the ``seq`` ``after`` if given."""
        rows = self._query("SELECT *, rowid FROM dlq WHERE rowid > ? ORDER BY rowid", (after or 0,))
        return [dead_letter_from_row(row) for row in rows]

    def dead_letter_by_id(self, dlq_id: str) -> DeadLetter | None:
        """Return the DLQ entry ``dlq_id``, or None."""
        rows = self._query("SELECT *, rowid FROM dlq WHERE dlq_id = ?", (dlq_id,))
        return dead_letter_from_row(rows[0]) if rows else None

    def delete_dead_letters(self, dlq_ids: list[str]) -> int:
        """Delete DLQ entries; return how many existed."""
        with self._tx() as db:
            return sum(
                db.execute("DELETE FROM dlq WHERE dlq_id = ?", (i,)).rowcount for i in dlq_ids
            )

    def retry_dead_letter(self, dlq_id: str, message: Message, now: float) -> bool:
        """Replace the DLQ entry ``dlq_id`` by the new pending ``message``."""
        with self._tx() as db:
            if db.execute("DELETE FROM dlq WHERE dlq_id = ?", (dlq_id,)).rowcount == 0:
                return False
            _insert_message(db, message, now)
        return True

    # -- schedules ----------------------------------------------------------------------

    def upsert_schedule(self, schedule: Schedule) -> None:
        """Create or replace a schedule (the id is the publisher's or ours)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO schedules VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE"
                " SET spec = excluded.spec, body = excluded.body, next_at = excluded.next_at",
                (
                    schedule.id,
                    json.dumps(schedule.spec),
                    schedule.body,
                    int(schedule.paused),
                    schedule.created,
                    schedule.next_at,
                    schedule.last_at,
                ),
            )

    def schedules(self) -> list[Schedule]:
        """Return every schedule, oldest first."""
        return [
            schedule_from_row(row)
            for row in self._query("SELECT * FROM schedules ORDER BY created")
        ]

    def schedule(self, schedule_id: str) -> Schedule | None:
        """Return the schedule ``schedule_id``, or None."""
        rows = self._query("SELECT * FROM schedules WHERE id = ?", (schedule_id,))
        return schedule_from_row(rows[0]) if rows else None

    def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule; say whether it existed."""
        with self._tx() as db:
            return db.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,)).rowcount > 0

    def pause_schedule(self, schedule_id: str, paused: bool, next_at: float) -> bool:
        """Pause or resume a schedule; say whether it exists."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE schedules SET paused = ?, next_at = ? WHERE id = ?",
                (int(paused), next_at, schedule_id),
            )
            return cursor.rowcount > 0

    def fire_schedule(
        self, schedule_id: str, message: Message, *, now: float, next_at: float
    ) -> None:
        """Publish one firing of a schedule and move it to its next time, atomically."""
        with self._tx() as db:
            _insert_message(db, message, now)
            db.execute(
                "UPDATE schedules SET last_at = ?, next_at = ? WHERE id = ?",
                (now, next_at, schedule_id),
            )

    # -- queues -------------------------------------------------------------------------

    def upsert_queue(self, name: str, parallelism: int, paused: bool, now: float) -> Queue:
        """Create or update a queue and return it."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO queues VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
                " parallelism = excluded.parallelism, paused = excluded.paused,"
                " updated = excluded.updated",
                (name, parallelism, int(paused), now, now),
            )
        queue = self.queue(name)
        assert queue is not None
        return queue

    def queue(self, name: str) -> Queue | None:
        """Return the queue ``name``, or None."""
        rows = self._query("SELECT * FROM queues WHERE name = ?", (name,))
        return queue_from_row(rows[0]) if rows else None

    def queues(self) -> list[Queue]:
        """Return every queue by name."""
        return [queue_from_row(row) for row in self._query("SELECT * FROM queues ORDER BY name")]

    def delete_queue(self, name: str) -> bool:
        """Delete a queue; say whether it existed."""
        with self._tx() as db:
            return db.execute("DELETE FROM queues WHERE name = ?", (name,)).rowcount > 0


def _insert_message(db: sqlite3.Connection, message: Message, now: float) -> None:
    db.execute(
        "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            message.id,
            json.dumps(message.spec),
            message.body,
            message.spec.get("queueName"),
            message.retried,
            message.due,
            now,
        ),
    )


def _insert_attempt(db: sqlite3.Connection, message_id: str, attempt: Attempt) -> None:
    db.execute(
        "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?)",
        (
            message_id,
            attempt.retried,
            attempt.status,
            attempt.error,
            attempt.latency_ms,
            attempt.at,
        ),
    )
