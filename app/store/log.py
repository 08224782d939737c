"""The delivery log: one row per delivery ``with_qstash`` answered, written in batches.

Only verified deliveries are logged: a request refused before its signature was checked
(401, or 489 for a body over the size limit) carries nothing but what an unauthenticated
caller chose, and nothing of it may reach the digest email or the dashboard. The metrics
count those refusals by reason.

``DeliveryLog.after_delivery`` only builds a row and buffers it; the buffer is written
after an answer has gone out, in batches. A delivery therefore never waits for the
database and never fails because of it: when the database is down or the buffer is full,
rows are dropped and counted, and one warning a minute says so.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from flask import Response
from sqlalchemy import Engine, bindparam

from app.hooks import outcome
from app.store.engine import (
    call_in_forked_children,
    execute_many,
    start_quiet_writer,
    writing,
)
from app.store.guard import guard_verdict
from app.store.schema import deliveries

if TYPE_CHECKING:
    from app.delivery import Delivery

logger = logging.getLogger(__name__)

_ERROR_LIMIT = 500
_ID_LIMIT = 200


def _clip(value: str | None, limit: int = _ID_LIMIT) -> str | None:
    return None if value is None else value[:limit]


def error_summary(response: Response) -> str | None:
    """Return ``code: message`` of a framework error response, or None for a success."""
    if response.status_code < 300:
        return None
    body = response.get_json(silent=True) if response.is_json else None
    if isinstance(body, dict) and "message" in body:
        return f"{body.get('code', 'error')}: {body['message']}"[:_ERROR_LIMIT]
    return f"HTTP {response.status_code}"


def delivery_row(
    job: str | None, delivery: Delivery, response: Response, duration: float
) -> dict[str, Any]:
    """Return the ``deliveries`` row describing one answered, verified delivery."""
    return {
        "at_ms": int((time.time() - duration) * 1000),
        "job": (job or "?")[:100],
        "message_id": _clip(delivery.message_id),
        "schedule_id": _clip(delivery.schedule_id),
        "retried": delivery.retried,
        "outcome": outcome(response.status_code),
        "status": response.status_code,
        "duration_ms": duration * 1000,
        "error": error_summary(response),
        "guard": guard_verdict(response),
        "dlq_id": None,
    }


_COLUMNS = (
    "at_ms",
    "job",
    "message_id",
    "schedule_id",
    "retried",
    "outcome",
    "status",
    "duration_ms",
    "error",
    "guard",
    "dlq_id",
)
#: The rows of :func:`delivery_row`, inserted without SQLAlchemy's per-row bookkeeping.
_INSERT = deliveries.insert().values({name: bindparam(name) for name in _COLUMNS})


class BatchWriter:
    """A bounded per-process buffer of rows, written in batches.

    A request only appends its row. The buffer is written by a request's ``close`` (after
    its answer went out) once it holds ``batch`` rows or its oldest row is ``delay``
    seconds old, and by an idle timer thread when no request comes. Writing from the
    request thread rather than a busy background thread avoids the GIL hand-offs that
    would slow every request of the process.
    """

    def __init__(
        self, engine: Engine, *, capacity: int = 10_000, batch: int = 100, delay: float = 0.5
    ) -> None:
        self.engine = engine
        self.capacity = capacity
        self.batch = batch
        self.delay = delay
        self.dropped = 0
        self._rows: list[dict[str, Any]] = []
        self._oldest = 0.0
        self._latest = 0.0
        self._lock = threading.Lock()
        self._ready = False  # this process has its timer
        self._stop = threading.Event()
        self._warned_at = 0.0
        call_in_forked_children(self._forked)

    def _forked(self) -> None:
        """In a forked child: the parent's rows are written there; no timer runs here."""
        self._ready = False
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._rows = []

    def submit(self, row: dict[str, Any]) -> bool:
        """Buffer ``row`` (or drop it, counted, when full); say whether a write is due."""
        if not self._ready:
            self._start()
        with self._lock:
            if len(self._rows) >= self.capacity:
                self._drop(1, "the delivery log buffer is full")
                return True
            self._latest = time.monotonic()
            if not self._rows:
                self._oldest = self._latest
            self._rows.append(row)
            return len(self._rows) >= self.batch or self._due()

    def _due(self) -> bool:
        return bool(self._rows) and time.monotonic() - self._oldest >= self.delay

    def flush(self, timeout: float = 10.0) -> bool:
        """Write every buffered row now; return False if the lock was busy past ``timeout``."""
        if not self._lock.acquire(timeout=timeout):
            return False
        try:
            rows, self._rows = self._rows, []
            self._write(rows)
        finally:
            self._lock.release()
        return True

    def flush_if_due(self) -> None:
        """Write the buffer if it is full enough or old enough (a request's ``close``)."""
        with self._lock:
            if len(self._rows) >= self.batch or self._due():
                rows, self._rows = self._rows, []
                self._write(rows)

    def close(self) -> None:
        """Write what is buffered and stop this process's idle timer."""
        self._stop.set()
        self.flush()

    def _start(self) -> None:
        with self._lock:
            if self._ready:
                return
            self._ready = True
            self._stop = start_quiet_writer(
                "delivery-log", self.delay, lambda: self._latest, self.flush_if_due
            )
            atexit.register(self.flush, 2.0)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        try:
            with writing(self.engine) as conn:
                execute_many(conn.connection.driver_connection, conn.dialect, _INSERT, rows)
        except Exception as exc:
            self._drop(len(rows), f"the delivery log could not be written ({exc})")

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        now = time.monotonic()
        if now - self._warned_at > 60:  # one warning a minute, not one per delivery
            self._warned_at = now
            logger.warning("%s; %d row(s) dropped so far", reason, self.dropped)


class DeliveryLog:
    """The delivery hook that records every answered delivery."""

    def __init__(self, writer: BatchWriter) -> None:
        self.writer = writer

    def before_handler(self, delivery: Delivery) -> Response | None:
        """Never answer early: the log only observes."""
        return None

    def after_delivery(
        self, job: str | None, delivery: Delivery | None, response: Response, duration: float
    ) -> None:
        """Queue the row for this delivery; never raise into the request.

        A request refused before verification (``delivery`` is None) is not logged.
        """
        if delivery is None:
            return
        try:
            if self.writer.submit(delivery_row(job, delivery, response, duration)):
                # Written once the answer has gone out, not while QStash waits for it.
                response.call_on_close(self.writer.flush_if_due)
        except Exception:
            logger.exception("could not queue a delivery log row")
