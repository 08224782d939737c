"""The store's writer: what a delivery leaves to write, written in batches off its path.

A delivery only queues: its log row, and its claim's completion (done, with the answer)
or release. A thread of each process writes the queue every ``delay`` seconds: the
claims in one transaction, then the log rows in another, so that a log that cannot be
written never holds the claims back. No delivery waits for these writes. On SQLite the
thread also checkpoints the write-ahead log (:func:`app.store.engine.checkpoint`) on a
connection of its own, opened at its first tick (``delay`` after the process queued its
first write) and closed as it stops. Taken from the engine's pool, a checkpoint meeting a
request's write opened a second pooled connection at any moment of a worker's life,
which its open descriptors showed (tests/test_soak.py).

On SQLite the request whose answer fills a batch (``batch`` items) writes it instead, once
the answer has gone out (``after_answer``), and the thread only writes what has waited
``delay`` seconds, for a quiet worker.
SQLite has one write lock for every process of the host, and a thread holding it must
win the GIL back from the request thread after each statement. Measured under gunicorn
-w 2 with a 1 ms handler: while the thread wrote, the other worker's claims averaged
630-710 µs; with the request writing after its answer, 310-390 µs (medians 130-190 µs
either way). PostgreSQL has no such lock: there only the thread writes, and a delivery
makes no round trip after its handler.

What the window costs. Until a completion is written, a duplicate reaching this process
is answered from the queue (:meth:`Writer.pending`); one reaching another process finds
the claim still running and gets 503 + ``Retry-After`` as it would during the handler,
and QStash's retry gets the stored answer. A process that dies in the window loses its
queue (PostgreSQL: the last ``delay`` seconds; SQLite: fewer than ``batch`` deliveries,
or up to twice ``delay`` for a quiet worker): its claims stay running until their lease
ends and are then taken over, so a message whose answer QStash *also* lost runs again;
its log rows are lost. A completion or release that cannot be written stays
queued and is tried again; log rows are dropped (counted) when the database fails or
``capacity`` rows wait, never blocking a delivery.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from app.store import claims
from app.store.engine import checkpoint, writing
from app.store.schema import deliveries

logger = logging.getLogger(__name__)

#: (job, message id)
Key = tuple[str, str]
#: Seconds between two checkpoints of SQLite's write-ahead log (see engine.checkpoint).
CHECKPOINT_EVERY = 0.5


@dataclass(frozen=True)
class Pending:
    """A claim's completion, with its answer, or its release (``answer`` None)."""

    params: dict[str, Any]
    answer: claims.Completed | None


class Writer:
    """A per-process queue of log rows and claim updates, written by a thread."""

    def __init__(
        self,
        engine: Engine,
        *,
        delay: float = 0.05,
        batch: int = 20,
        capacity: int = 10_000,
        after_answer: bool = False,
    ) -> None:
        self.engine = engine
        self.delay = delay
        self.batch = batch
        self.capacity = capacity
        self.after_answer = after_answer
        self.dropped = 0  # log rows
        self._reset()
        _WRITERS.add(self)

    def _reset(self) -> None:
        """Start empty, with no thread (also in a forked child: threads do not survive)."""
        self._rows: list[dict[str, Any]] = []
        self._claims: dict[Key, Pending] = {}
        self._oldest = 0.0  # when the oldest item still queued arrived (monotonic)
        self._lock = threading.Lock()  # the two queues
        self._writing = threading.Lock()  # one write at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_at = 0.0

    def submit(self, row: dict[str, Any]) -> bool:
        """Queue a log row, or drop it (counted) when ``capacity`` rows already wait.

        Return True when the caller should :meth:`flush` once its answer went out.
        """
        with self._lock:
            full = len(self._rows) >= self.capacity
            if not full:
                self._arrived()
                self._rows.append(row)
        if full:
            self._drop(1, "the delivery log buffer is full")
        return self._due()

    def queue(self, key: Key, pending: Pending) -> bool:
        """Queue a claim's completion or release; see :meth:`submit` for the answer."""
        with self._lock:
            self._arrived()
            self._claims[key] = pending
        return self._due()

    def pending(self, key: Key) -> Pending | None:
        """Return what is queued for ``key`` and not yet written, if anything."""
        return self._claims.get(key)

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything queued now; False if another write held on past ``timeout``."""
        if not self._writing.acquire(timeout=timeout):
            return False
        try:
            with self._lock:
                rows, self._rows = self._rows, []
                queued = dict(self._claims)  # answered from the queue until committed
            if queued:
                self._write_claims(queued)
            if rows:
                self._write_rows(rows)
        finally:
            self._writing.release()
        return True

    def close(self) -> None:
        """Stop this process's thread (its connection closed) and write what is queued."""
        self._stop.set()
        atexit.unregister(self.close)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    def _arrived(self) -> None:
        """Note an item queued now (under ``_lock``); start this process's thread."""
        if not (self._rows or self._claims):
            self._oldest = time.monotonic()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def _due(self) -> bool:
        return self.after_answer and len(self._rows) + len(self._claims) >= self.batch

    def _run(self) -> None:
        # SQLite: checkpoints go through a pool of their own (the engine's connect settings),
        # so they never take, or add, a connection of the pool the writes use. Its one
        # connection opens at the first tick and closes as the thread stops.
        sqlite = self.engine.dialect.name == "sqlite"  # others checkpoint on their own
        checkpoints = self.engine.pool.recreate() if sqlite else None
        checkpointed = -math.inf  # the first tick checkpoints
        try:
            while not self._stop.wait(self.delay):
                now = time.monotonic()
                quiet = now - self._oldest >= self.delay  # SQLite: no request will write it
                if (self._rows or self._claims) and (quiet or not self.after_answer):
                    self.flush()
                if checkpoints is not None and now - checkpointed >= CHECKPOINT_EVERY:
                    checkpointed = now
                    try:
                        # Not `with`: a pooled connection is a context manager only
                        # from SQLAlchemy 2.0.31 on, and 2.0.30 is supported.
                        connection = checkpoints.connect()
                        try:
                            checkpoint(connection)
                        finally:
                            connection.close()  # back to its pool of one, kept open
                    except Exception as exc:
                        self._warn(f"the store could not checkpoint SQLite's log ({exc})")
        finally:
            if checkpoints is not None:
                checkpoints.dispose()

    def _write_claims(self, queued: dict[Key, Pending]) -> None:
        done = [pending.params for pending in queued.values() if pending.answer is not None]
        released = [pending.params for pending in queued.values() if pending.answer is None]
        try:
            with writing(self.engine) as conn:
                lost = claims.write(conn, done, released)
        except Exception as exc:
            self._warn(f"duplicate guard: could not record claims, will try again ({exc})")
            return
        with self._lock:  # committed: from now on the table answers
            for key, pending in queued.items():
                if self._claims.get(key) is pending:
                    del self._claims[key]
        for job, message_id in lost:
            logger.warning(
                "the claim on %s message %s expired while its handler ran and was taken"
                " over; raise DUPLICATE_LEASE_SECONDS or the job's timeout",
                job,
                message_id,
            )

    def _write_rows(self, rows: list[dict[str, Any]]) -> None:
        try:
            with writing(self.engine) as conn:
                conn.execute(deliveries.insert(), rows)
        except Exception as exc:
            self._drop(len(rows), f"the delivery log could not be written ({exc})")

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        self._warn(f"{reason}; {self.dropped} row(s) dropped so far")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at > 60:  # one warning a minute, not one per delivery
            self._warned_at = now
            logger.warning(message)


_WRITERS: weakref.WeakSet[Writer] = weakref.WeakSet()


def _forget_in_child() -> None:
    for writer in _WRITERS:
        writer._reset()  # the parent writes its own queue


os.register_at_fork(after_in_child=_forget_in_child)
