"""The delivery log: one row per delivery ``with_qstash`` answered, written off the request.

``DeliveryLog.after_delivery`` only builds a row and puts it on a bounded queue; a
background thread per process writes the queue in batches. A delivery therefore never
waits for the database and never fails because of it: when the database is down or the
queue is full, rows are dropped and counted, and one warning says so.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from flask import Response, has_request_context, request
from sqlalchemy import Engine

from app.qstash.receiver import outcome
from app.store.schema import deliveries

if TYPE_CHECKING:
    from app.qstash.receiver import Delivery

logger = logging.getLogger(__name__)

#: The response header the duplicate guard sets when it answered instead of the handler.
GUARD_HEADER = "X-Duplicate-Delivery"
_ERROR_LIMIT = 500
_STOP: dict[str, Any] = {}  # the sentinel that stops a writer thread
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
    job: str | None, delivery: Delivery | None, response: Response, duration: float
) -> dict[str, Any]:
    """Return the ``deliveries`` row describing one answered delivery."""
    message_id = delivery.message_id if delivery else _unverified_header("Upstash-Message-Id")
    return {
        "at_ms": int((time.time() - duration) * 1000),
        "job": (job or "?")[:100],
        "message_id": _clip(message_id),
        "schedule_id": _clip(delivery.schedule_id if delivery else None),
        "retried": delivery.retried if delivery else 0,
        "outcome": outcome(response.status_code),
        "status": response.status_code,
        "duration_ms": duration * 1000,
        "error": error_summary(response),
        "guard": response.headers.get(GUARD_HEADER),
        "dlq_id": None,
    }


def _unverified_header(name: str) -> str | None:
    # A refused delivery has no Delivery; its header is still worth logging, as a claim.
    return request.headers.get(name) if has_request_context() else None


class BatchWriter:
    """A bounded queue of rows and the thread that inserts them in batches."""

    def __init__(self, engine: Engine, *, capacity: int = 10_000, batch: int = 500) -> None:
        self.engine = engine
        self.capacity = capacity
        self.batch = batch
        self.dropped = 0
        self._pid = -1
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(capacity)
        self._lock = threading.Lock()
        self._warned_at = 0.0

    def submit(self, row: dict[str, Any]) -> None:
        """Queue ``row`` for writing; drop it (counted) when the queue is full."""
        if self._pid != os.getpid():
            self._start()
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self._drop(1, "the delivery log queue is full")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued row is written or dropped; return False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.005)
        return False

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop this process's writer thread."""
        if self._pid != os.getpid():
            return
        self.flush(timeout)
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self._pid = -1

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            # A forked child inherits the parent's queue but not its thread: start afresh.
            self._queue = queue.Queue(self.capacity)
            self._pid = os.getpid()
            thread = threading.Thread(target=self._run, name="delivery-log", daemon=True)
            thread.start()
            atexit.register(self.flush, 2.0)

    def _run(self) -> None:
        source = self._queue
        while True:
            rows = [source.get()]
            while len(rows) < self.batch and rows[-1] is not _STOP:
                try:
                    rows.append(source.get_nowait())
                except queue.Empty:
                    break
            stop = rows[-1] is _STOP
            self._write([row for row in rows if row is not _STOP])
            for _ in rows:
                source.task_done()
            if stop:
                return

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(deliveries.insert(), rows)
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
        """Queue the row for this delivery; never raise into the request."""
        try:
            self.writer.submit(delivery_row(job, delivery, response, duration))
        except Exception:
            logger.exception("could not queue a delivery log row")
