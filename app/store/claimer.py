"""How the duplicate guard claims messages, cheaply enough to run on every delivery.

The guard needs, per delivery, a claim that every other worker and host sees *before*
the handler runs, and after a 2xx answer a durable "done" with that answer. Both
claimers below answer a duplicate that reaches *this* process before "done" is written
from memory, and run their statements straight on a DBAPI connection kept per thread
(compiled once by SQLAlchemy, see :func:`app.store.engine.execute`): SQLAlchemy's
per-transaction pool checkout, events and pre-ping cost more than the SQL.

:class:`Claimer` (PostgreSQL; several hosts) commits each claim as a row with a lease
before the handler. Marking it done waits for the next transaction the process opens
anyway, the next claim, or for an idle timer ``delay`` seconds later: one commit per
delivery instead of two.

:class:`HostClaimer` (SQLite, which is one host by nature) holds each running claim as a
kernel record lock on a file next to the database, which costs one system call, and
writes only the done rows, in batches. The kernel drops a dead process's locks at once,
so a crashed worker's claims are free immediately rather than after a lease.

What deferring "done" costs, for both: in the window, a duplicate reaching another
process finds the claim still held and is answered 503 + ``Retry-After`` exactly as if
it had arrived during the handler; QStash retries it and gets the stored answer. A
process dying in the window loses its done rows, so a later redelivery would run the
handler again; QStash redelivers only when it did not get our answer, so that takes a
crash *and* a lost answer within ``delay`` seconds.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine

from app.store import claims
from app.store.engine import call_in_forked_children, start_quiet_writer, write_lock

logger = logging.getLogger(__name__)

Key = tuple[str, str]
#: How long a completion may wait for a transaction before a timer writes it.
DELAY = 0.05


class _Base:
    """A DBAPI connection per thread, a per-process timer, and warnings at most per minute."""

    def __init__(self, engine: Engine, delay: float) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self.delay = delay
        self._sqlite = engine.dialect.name == "sqlite"
        self._lock = threading.Lock()
        self._pending: dict[Key, dict[str, Any]] = {}
        self._oldest = 0.0
        self._latest = 0.0  # when this process last queued a completion
        self._local = threading.local()
        self._ready = False  # this process has its state and timer
        self._stop = threading.Event()
        self._warned_at = 0.0
        # Connections inherited through fork: never used or closed by the child.
        self._inherited: list[Any] = []
        self._open: list[Any] = []  # this process's, closed by close()
        call_in_forked_children(self._forked)

    def _forked(self) -> None:
        """In a forked child: drop the parent's state; the first claim sets ours up."""
        self._ready = False
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._pending = {}  # the parent's claims, not ours
        inherited = getattr(self._local, "driver", None)
        if inherited is not None:
            self._inherited.append(inherited)
        self._inherited.extend(self._open)
        self._open = []
        self._local = threading.local()

    def flush(self) -> None:
        raise NotImplementedError

    def flush_if_due(self) -> None:
        """Write the queued completions if they are due; never raise."""
        if self._due():
            try:
                self.flush()
            except Exception as exc:
                self._warn(f"duplicate guard: could not record completed deliveries ({exc})")

    def close(self) -> None:
        """Write the queued completions, stop this process's timer, close its connections."""
        self._stop.set()
        try:
            self.flush()
        except Exception:
            logger.exception("duplicate guard: could not record completed deliveries")
        if self._ready:
            for driver in self._open:
                try:
                    driver.close()
                except Exception:
                    logger.debug("closing a claim connection", exc_info=True)
        self._open = []
        self._local = threading.local()

    def _due(self) -> bool:
        return bool(self._pending) and time.monotonic() - self._oldest >= self.delay

    def _new_process(self) -> None:
        """Open what this process needs of its own, on its first claim (under ``_lock``)."""

    def _queue(self, key: Key, params: dict[str, Any]) -> bool:
        """Queue a completion; say whether a write is due."""
        with self._lock:
            self._latest = time.monotonic()
            if not self._pending:
                self._oldest = self._latest
            self._pending[key] = params
        return self._due()

    def _queued_answer(self, key: Key) -> claims.Completed | None:
        return self._answer_of(self._pending.get(key))

    @staticmethod
    def _answer_of(done: dict[str, Any] | None) -> claims.Completed | None:
        if done is None:
            return None
        return claims.Completed(
            status=done["b_status"], content_type=done["b_content_type"], body=done["b_body"]
        )

    def _started(self) -> None:
        """Set this process up on its first claim: its own state and timer."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            self._new_process()
            self._stop = start_quiet_writer(
                "duplicate-guard", self.delay, lambda: self._latest, self.flush_if_due
            )
            atexit.register(self.close)
            self._ready = True

    def _connection(self) -> Any:
        local = self._local
        if getattr(local, "driver", None) is None:
            proxied = self.engine.raw_connection()
            driver: Any = proxied.driver_connection
            proxied.detach()  # ours for this thread's life, not the pool's
            if not self._sqlite:
                driver.rollback()  # the pool's pre-ping may have opened a transaction
                driver.autocommit = True  # see _write
            local.driver = driver
            self._open.append(driver)
        return local.driver

    def _discard(self, driver: Any) -> None:
        self._local.driver = None
        if driver in self._open:
            self._open.remove(driver)
        try:
            driver.rollback()
            driver.close()
        except Exception:
            logger.debug("closing a failed claim connection", exc_info=True)

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """A write transaction on this thread's connection; a failed one drops it.

        PostgreSQL runs it as one pipeline: the statements go out together and their
        results come back together (psycopg's pipeline mode), so a claim carrying queued
        completions costs one round trip instead of four (BEGIN, UPDATE, INSERT, COMMIT).
        Up to its sync point a pipeline is one implicit transaction: all or nothing.
        """
        driver = self._connection()
        try:
            if not self._sqlite:
                with driver.pipeline():
                    yield driver
                return
            with write_lock(self.engine):
                driver.execute("BEGIN IMMEDIATE")
                yield driver
                driver.commit()
        except BaseException:
            self._discard(driver)
            raise

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at > 60:  # one a minute, not one per delivery
            self._warned_at = now
            logger.warning(message)


class Claimer(_Base):
    """Claims as leased rows: one commit per delivery, completions ride the next one."""

    def __init__(self, engine: Engine, *, delay: float = DELAY) -> None:
        super().__init__(engine, delay)
        # Completions a transaction is writing, answered from here until it committed:
        # a completed message is found in memory or in the table at every instant.
        self._writing: dict[Key, dict[str, Any]] = {}

    def claim(self, job: str, message_id: str, *, now_ms: int, lease_ms: int) -> claims.Claim:
        """Claim (job, message_id) in one committed transaction, or say why not."""
        self._started()
        key = (job, message_id)
        with self._lock:  # a completion moves between the two maps under this lock
            done = self._queued_answer(key) or self._answer_of(self._writing.get(key))
        if done is not None:
            return done
        with self._transaction() as driver:
            return claims.claim_on(
                driver, self.dialect, job, message_id, now_ms=now_ms, lease_ms=lease_ms
            )

    def complete(self, job: str, message_id: str, token: str, **answer: Any) -> bool:
        """Queue marking our claim done with its answer; the next transaction writes it.
        Say whether a write is due."""
        return self._queue((job, message_id), claims.completion(job, message_id, token, **answer))

    def release(self, job: str, message_id: str, token: str) -> bool:
        """Give our claim up now, so QStash's retry runs the handler; False if it was lost."""
        with self._transaction() as driver:
            cursor = claims.release_on(driver, self.dialect, job, message_id, token)
        return bool(cursor.rowcount == 1)

    def flush(self) -> None:
        """Commit the queued completions now."""
        if self._pending and self._ready:
            with self._transaction():
                pass

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A write transaction that first commits the queued completions."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._writing.update(pending)
        try:
            with self._write() as driver:
                cursors = [
                    claims.complete_on(driver, self.dialect, params) for params in pending.values()
                ]
                yield driver
        except BaseException:
            with self._lock:  # still to be recorded: back in the queue
                self._pending = {**pending, **self._pending}
                self._written(pending)
            raise
        with self._lock:  # committed: the table answers from now on
            self._written(pending)
        lost = sum(cursor.rowcount != 1 for cursor in cursors)
        if lost:
            logger.warning(
                "%d claim(s) expired while their handler ran and were taken over; raise"
                " DUPLICATE_LEASE_SECONDS or the job's timeout",
                lost,
            )

    def _written(self, done: dict[Key, dict[str, Any]]) -> None:
        """Forget the completions of a finished transaction (under ``_lock``)."""
        for key, params in done.items():
            if self._writing.get(key) is params:
                del self._writing[key]

    def _forked(self) -> None:
        super()._forked()
        self._writing = {}


class HostClaimer(_Base):
    """Claims as kernel record locks on ``lock_path``; done rows written in batches.

    Each (job, message id) maps to one byte of the lock file (a 62-bit hash: a collision
    would only make one message wait for another). The locks live in a :class:`_LockFile`
    shared by every claimer of this process on that path, since POSIX record locks
    belong to the process, not to a claimer or a thread.
    """

    def __init__(
        self, engine: Engine, lock_path: str, *, delay: float = DELAY, batch: int = 100
    ) -> None:
        super().__init__(engine, delay)
        self.lock_path = lock_path
        self.batch = batch
        self._flushing = threading.Lock()
        self._file: _LockFile | None = None

    def claim(self, job: str, message_id: str, *, now_ms: int, lease_ms: int) -> claims.Claim:
        """Lock (job, message_id) and check it was not done before, or say why not."""
        self._started()
        key = (job, message_id)
        with self._lock:
            done = self._queued_answer(key)
            if done is not None:
                return done
            if not self._locks().acquire(key, now_ms):
                # Held by a live handler here or in another process of this host.
                return claims.Busy(retry_after=max(1, math.ceil(lease_ms / 1000)))
        driver = None
        try:
            driver = self._connection()
            found = claims.read_on(driver, self.dialect, job, message_id, now_ms)
        except BaseException:
            if driver is not None:
                self._discard(driver)
            self._locks().release([key])  # never keep a lock we did not get to use
            raise
        if found is not None:
            self._locks().release([key])
            return found
        return _OURS

    def complete(self, job: str, message_id: str, token: str, **answer: Any) -> bool:
        """Queue the done row (the lock stays held until it is written); say if a
        write is due."""
        params = claims.completion(job, message_id, token, **answer)
        params["b_claimed_at_ms"] = self._locks().claimed_at((job, message_id), params["now_ms"])
        return self._queue((job, message_id), params)

    def release(self, job: str, message_id: str, token: str) -> bool:
        """Drop our lock so QStash's retry runs the handler; nothing was written."""
        self._locks().release([(job, message_id)])
        return True

    def flush(self) -> None:
        """Write the queued done rows in one transaction, then drop their locks."""
        if not self._ready:
            return
        with self._flushing:
            with self._lock:
                batch = dict(self._pending)
            if not batch:
                return
            with self._write() as driver:
                claims.record_done_on(driver, self.dialect, list(batch.values()))
            with self._lock:  # as one step for claim(), which looks under this lock
                for key in batch:
                    del self._pending[key]
                self._locks().release(batch)

    def _due(self) -> bool:
        return len(self._pending) >= self.batch or super()._due()

    def _forked(self) -> None:
        super()._forked()
        self._flushing = threading.Lock()

    def _new_process(self) -> None:
        super()._new_process()
        self._file = _LockFile.at(self.lock_path)

    def _locks(self) -> _LockFile:
        assert self._file is not None, "claim() sets the lock file up"
        return self._file


_OURS = claims.Acquired(token="", takeover=False)  # a kernel lock needs no token


class _LockFile:
    """This process's record locks on one lock file, and which claims they stand for.

    One per path and process (:meth:`at`): a record lock taken through one descriptor
    is the process's, so two claimers locking separately would each see the other's
    locks as their own, and closing any descriptor of the file would drop them all (so
    it is never closed). ``_running`` tells this process's threads apart.
    """

    _open: dict[str, _LockFile] = {}
    _opening = threading.Lock()

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._mutex = threading.Lock()
        # Locked here -> (claimed at in ms, the lock's byte).
        self._running: dict[Key, tuple[int, int]] = {}

    @classmethod
    def at(cls, path: str) -> _LockFile:
        """Return this process's lock file at ``path``, opening it on first use."""
        real = os.path.realpath(path)
        with cls._opening:
            found = cls._open.get(real)
            if found is None:
                found = cls._open[real] = cls(real)
            return found

    @classmethod
    def forked(cls) -> None:
        """In a forked child: no record lock was inherited, so no claim either."""
        cls._opening = threading.Lock()  # another thread may have held it at the fork
        for file in cls._open.values():
            file._mutex = threading.Lock()
            file._running = {}

    def acquire(self, key: Key, now_ms: int) -> bool:
        """Lock ``key`` for this thread; False if a thread or process holds it."""
        with self._mutex:
            if key in self._running:
                return False
            offset = _offset(key)
            if not self._lock(offset, fcntl.LOCK_EX | fcntl.LOCK_NB, 1):
                return False
            self._running[key] = (now_ms, offset)
            return True

    def claimed_at(self, key: Key, default: int) -> int:
        """Return when ``key`` was locked here (epoch ms), or ``default``."""
        running = self._running.get(key)
        return running[0] if running else default

    def release(self, keys: Iterable[Key]) -> None:
        """Unlock ``keys`` (those not held here are ignored)."""
        with self._mutex:
            offsets = [held[1] for key in keys if (held := self._running.pop(key, None))]
            if len(offsets) > 1 and not self._running:
                # Nothing else is held here: one call unlocks the whole file.
                self._lock(0, fcntl.LOCK_UN, 0)
                return
            for offset in offsets:
                self._lock(offset, fcntl.LOCK_UN, 1)

    def _lock(self, offset: int, operation: int, length: int) -> bool:
        try:
            fcntl.lockf(self._fd, operation, length, offset, os.SEEK_SET)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        return True


os.register_at_fork(after_in_child=_LockFile.forked)


def _offset(key: Key) -> int:
    """The byte of the lock file that stands for ``key``: 62 bits of its hash."""
    digest = hashlib.blake2b(f"{key[0]}\0{key[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2
