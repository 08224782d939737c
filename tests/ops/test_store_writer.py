"""The store's writer: claim updates and log rows, written in batches off the delivery's path."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select, text

from app.store import Store, claims
from app.store import writer as writer_module
from app.store.schema import claims as claims_table
from app.testing import DeliveryClient

LEASE_MS = 60_000
ANSWER = claims.Completed(status=200, content_type="application/json", body=b'{"ok":true}')


@pytest.fixture
def guard(store: Store) -> Any:
    """The store's guard, its writer waiting for a flush (set before its thread starts)."""
    store.writer.delay = 3600
    assert store.guard is not None
    return store.guard


def completed(guard: Any, message_id: str) -> None:
    """Claim ``message_id`` and queue its completion."""
    result = guard.claim("noop", message_id, LEASE_MS)
    assert isinstance(result, claims.Acquired)
    guard.complete("noop", message_id, result.token, ANSWER)


def state(store: Store, message_id: str) -> str | None:
    with store.read() as conn:
        query = select(claims_table.c.state).where(claims_table.c.message_id == message_id)
        found: str | None = conn.execute(query).scalar()
    return found


def test_claim_updates_that_cannot_be_written_stay_queued(
    store: Store, guard: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed write loses no completion: it is still answered from the queue, and
    written by the next flush."""
    completed(guard, "msg_1")

    @contextmanager
    def refuse(engine: Engine) -> Iterator[Connection]:
        raise OSError("disk full")
        yield  # pragma: no cover

    with monkeypatch.context() as patch:
        patch.setattr(writer_module, "writing", refuse)
        assert store.flush()
    assert state(store, "msg_1") == "running"
    assert guard.claim("noop", "msg_1", LEASE_MS) == ANSWER
    assert store.flush()
    assert state(store, "msg_1") == "done"


def test_a_log_that_cannot_be_written_never_holds_claims_back(
    client: DeliveryClient, store: Store
) -> None:
    """Claims and log rows are written in separate transactions: with the log table
    gone, the claims land and the rows are dropped and counted."""
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE deliveries"))
    assert client.deliver("noop", {}, message_id="msg_1").status_code == 200
    assert store.flush()
    assert state(store, "msg_1") == "done"
    assert store.writer.dropped == 1


def claim_meanwhile(guard: Any, message_id: str, wait: float) -> Any:
    """Claim ``message_id`` in another thread; return what it answered within ``wait``
    seconds (None if it was still waiting) and a function that waits for its answer."""
    answers: list[claims.Claim] = []
    thread = threading.Thread(
        target=lambda: answers.append(guard.claim("noop", message_id, LEASE_MS))
    )
    thread.start()
    thread.join(timeout=wait)
    early = answers[0] if answers else None

    def final() -> claims.Claim:
        thread.join(timeout=30)
        return answers[0]

    return early, final


def test_a_completion_being_committed_is_replayed_meanwhile(
    store: Store, guard: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the writer's transaction holds a completion not yet committed, a duplicate
    in another thread gets the stored answer at once: not 503 for the lease, not a wait."""
    completed(guard, "msg_1")
    during: list[Any] = []
    real = writer_module.writing

    @contextmanager
    def slow(engine: Engine) -> Iterator[Connection]:
        with real(engine) as conn:
            yield conn
            during.append(claim_meanwhile(guard, "msg_1", wait=2))  # before the commit

    monkeypatch.setattr(writer_module, "writing", slow)
    assert store.flush()
    [(early, final)] = during
    assert early == ANSWER
    assert final() == ANSWER
    assert state(store, "msg_1") == "done"


def test_a_flush_waits_for_a_write_in_progress(store: Store, guard: Any) -> None:
    """One write at a time: a flush that cannot start within its timeout says so."""
    with store.writer._writing:
        assert not store.flush(timeout=0.05)
    assert store.flush(timeout=0.05)


def test_on_sqlite_the_request_that_fills_a_batch_writes_it_after_its_answer(
    client: DeliveryClient, store: Store
) -> None:
    """SQLite: the answer goes out first, then its request writes the full batch (no
    thread holds SQLite's one write lock meanwhile). PostgreSQL: the request never
    writes; the writer's thread does."""
    store.writer.delay = 3600  # set before its thread starts: it writes only when flushed
    store.writer.batch = 4  # two deliveries: two log rows, two completions
    client.deliver("noop", {}, message_id="msg_1").close()
    second = client.deliver("noop", {}, message_id="msg_2")
    assert (state(store, "msg_1"), state(store, "msg_2")) == ("running", "running")
    second.close()  # what the WSGI server does once the answer is sent
    written = store.engine.dialect.name == "sqlite"
    assert state(store, "msg_2") == ("done" if written else "running")
    assert store.flush()
    assert (state(store, "msg_1"), state(store, "msg_2")) == ("done", "done")


def test_sqlite_checkpoints_come_from_the_writers_thread(
    client: DeliveryClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No commit (a claim on a request's path) copies SQLite's log back into the
    database; the writer's thread does, every CHECKPOINT_EVERY seconds."""
    if store.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL checkpoints on its own")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    threads: list[str] = []
    real = writer_module.checkpoint

    def checkpoint(connection: Any) -> None:
        threads.append(threading.current_thread().name)
        real(connection)

    monkeypatch.setattr(writer_module, "checkpoint", checkpoint)
    monkeypatch.setattr(writer_module, "CHECKPOINT_EVERY", 0)  # read by the thread
    store.writer.delay = 0.01  # set before its thread starts
    client.deliver("noop", {}, message_id="msg_1")
    deadline = time.monotonic() + 5
    while not threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(threads) == {"store-writer"}
