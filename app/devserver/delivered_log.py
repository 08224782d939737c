"""Successful attempts, committed in batches by one thread."""

from __future__ import annotations

import logging
import threading
import time

from app.devserver.records import Attempt
from app.devserver.store import Store

log = logging.getLogger(__name__)


class DeliveredLog:
    """Commits successful attempts in batches from one thread.

    Successes are most of the writes; committing them one by one from every delivery thread
    made those threads queue on the database lock. A success not yet committed when the
    process dies is delivered again after the restart: at least once, as QStash promises.
    """

    def __init__(self, store: Store, *, max_wait: float = 0.01) -> None:
        self.store = store
        self.max_wait = max_wait
        self._pending: list[tuple[str, Attempt]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="qstash-delivered", daemon=True)

    def start(self) -> None:
        """Start committing."""
        self._thread.start()

    def add(self, message_id: str, attempt: Attempt) -> None:
        """Queue a successful attempt for the next commit."""
        with self._lock:
            self._pending.append((message_id, attempt))
        self._wake.set()

    def stop(self) -> None:
        """Commit what is queued and stop."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.flush()

    def flush(self) -> None:
        """Commit every queued success now."""
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            self.store.delivered(batch)

    def _loop(self) -> None:
        while not self._stopping:
            self._wake.wait()
            self._wake.clear()
            time.sleep(self.max_wait)  # let a batch gather
            try:
                self.flush()
            except Exception:
                log.exception("committing deliveries failed")
