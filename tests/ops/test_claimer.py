"""The guard's claimers: kernel-lock claims on SQLite, leased rows with deferred "done".

The cross-process cases fork real processes, as gunicorn does: POSIX record locks are
per process, so only another process can show that a claim excludes it.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from app.store import claimer_for, claims
from app.store.claimer import Claimer, HostClaimer
from app.store.engine import database_url as resolve_url
from app.store.engine import make_engine
from app.store.schema import claims as claims_table
from app.store.schema import migrate

LEASE_MS = 60_000
ANSWER = {"status": 200, "content_type": "application/json", "body": b'{"ok":true}'}


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(resolve_url(f"sqlite:///{tmp_path / 'store.sqlite3'}", str(tmp_path)))
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def host(engine: Engine) -> Iterator[HostClaimer]:
    claimer = claimer_for(engine)
    assert isinstance(claimer, HostClaimer)
    yield claimer
    claimer.close()


def claim(claimer: Claimer | HostClaimer, message_id: str) -> claims.Claim:
    return claimer.claim("noop", message_id, now_ms=now_ms(), lease_ms=LEASE_MS)


def complete(claimer: Claimer | HostClaimer, message_id: str, token: str) -> None:
    claimer.complete("noop", message_id, token, now_ms=now_ms(), **ANSWER)


def state(engine: Engine, message_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            select(claims_table.c.state).where(claims_table.c.message_id == message_id)
        ).scalar()


def in_child(target: Callable[..., None], *args: Any) -> multiprocessing.Process:
    """Start ``target(*args)`` in a forked process, as gunicorn forks its workers."""
    process = multiprocessing.get_context("fork").Process(target=target, args=args)
    process.start()
    return process


def _hold_then_die(host: HostClaimer, message_id: str, held: Any, die: Any) -> None:
    result = claim(host, message_id)
    held.put(type(result).__name__)
    die.wait(10)
    os._exit(1)  # a crash: no completion, no cleanup


def test_a_claim_held_by_another_process_is_busy_until_that_process_dies(
    host: HostClaimer,
) -> None:
    """The kernel lock excludes other workers and is freed at once when its owner dies."""
    context = multiprocessing.get_context("fork")
    held, die = context.Queue(), context.Event()
    child = in_child(_hold_then_die, host, "msg_crash", held, die)
    assert held.get(timeout=10) == "Acquired"
    busy = claim(host, "msg_crash")
    assert isinstance(busy, claims.Busy) and busy.retry_after == LEASE_MS // 1000
    die.set()
    child.join(10)
    assert child.exitcode == 1
    assert isinstance(claim(host, "msg_crash"), claims.Acquired)  # no lease to wait for


def _complete_in_child(host: HostClaimer, message_id: str) -> None:
    result = claim(host, message_id)
    assert isinstance(result, claims.Acquired)
    complete(host, message_id, result.token)
    host.close()  # as a worker's exit does
    os._exit(0)


def test_a_message_done_in_another_process_is_replayed(host: HostClaimer, engine: Engine) -> None:
    """Once the other worker wrote "done", a duplicate gets the stored answer."""
    child = in_child(_complete_in_child, host, "msg_done")
    child.join(10)
    assert child.exitcode == 0
    assert state(engine, "msg_done") == "done"
    replay = claim(host, "msg_done")
    assert replay == claims.Completed(
        status=200, content_type="application/json", body=b'{"ok":true}'
    )


def test_a_running_claim_is_busy_for_another_thread_of_the_same_process(
    host: HostClaimer,
) -> None:
    """Record locks do not exclude their own process: the claimer tells threads apart."""
    assert isinstance(claim(host, "msg_1"), claims.Acquired)
    assert isinstance(claim(host, "msg_1"), claims.Busy)


def test_two_claimers_of_one_process_share_its_locks(host: HostClaimer, engine: Engine) -> None:
    """Two apps of one process on one database: record locks are the process's, so
    each claimer must see the other's running claims, not take them as its own."""
    other = claimer_for(engine)
    assert isinstance(other, HostClaimer)
    first = claim(host, "msg_1")
    assert isinstance(first, claims.Acquired)
    assert isinstance(claim(other, "msg_1"), claims.Busy)
    complete(host, "msg_1", first.token)
    host.flush()
    assert isinstance(claim(other, "msg_1"), claims.Completed)
    other.close()


def test_a_written_batch_frees_its_locks_and_keeps_a_running_claim_held(
    host: HostClaimer,
) -> None:
    """Writing a batch unlocks its claims (at once when nothing else is held here) and
    never a claim whose handler still runs in another thread."""
    for message_id in ("msg_1", "msg_2", "msg_3"):
        result = claim(host, message_id)
        assert isinstance(result, claims.Acquired)
        complete(host, message_id, result.token)
    running = claim(host, "msg_running")
    assert isinstance(running, claims.Acquired)
    host.flush()
    assert claim_elsewhere(host, "msg_running") == "Busy"
    assert claim_elsewhere(host, "msg_1") == "Completed"
    complete(host, "msg_running", running.token)
    result = claim(host, "msg_4")
    assert isinstance(result, claims.Acquired)
    complete(host, "msg_4", result.token)
    host.flush()  # nothing else held: the whole file is unlocked in one call
    assert claim_elsewhere(host, "msg_running") == "Completed"
    assert claim_elsewhere(host, "msg_4") == "Completed"
    assert claim_elsewhere(host, "msg_5") == "Acquired"


def test_done_is_answered_from_memory_until_written_then_from_the_table(
    engine: Engine,
) -> None:
    """A completion waits for its batch; the same process replays it meanwhile."""
    host = HostClaimer(engine, str(engine.url.database) + ".claims", delay=60)
    first = claim(host, "msg_1")
    assert isinstance(first, claims.Acquired)
    complete(host, "msg_1", first.token)
    assert state(engine, "msg_1") is None  # not written yet
    assert isinstance(claim(host, "msg_1"), claims.Completed)
    host.flush()
    assert state(engine, "msg_1") == "done"
    assert isinstance(claim(host, "msg_1"), claims.Completed)
    host.close()


def test_a_full_batch_is_due_at_once_and_an_old_one_after_the_delay(engine: Engine) -> None:
    """Writes are batched by count and by age; the idle timer writes a quiet worker's."""
    host = HostClaimer(engine, str(engine.url.database) + ".claims", delay=0.05, batch=3)
    for index in range(3):
        result = claim(host, f"msg_{index}")
        assert isinstance(result, claims.Acquired)
        complete(host, f"msg_{index}", result.token)
    host.flush_if_due()  # three queued: a full batch
    assert state(engine, "msg_2") == "done"
    result = claim(host, "msg_idle")
    assert isinstance(result, claims.Acquired)
    complete(host, "msg_idle", result.token)
    deadline = time.monotonic() + 5
    while state(engine, "msg_idle") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert state(engine, "msg_idle") == "done"
    host.close()


def _claim_in_child(host: HostClaimer, message_id: str, answer: Any) -> None:
    answer.send(type(claim(host, message_id)).__name__)  # a pipe: sent before we exit
    os._exit(0)


def claim_elsewhere(host: HostClaimer, message_id: str) -> str:
    """Claim ``message_id`` in another process (which exits at once); return the result."""
    mine, theirs = multiprocessing.get_context("fork").Pipe()
    in_child(_claim_in_child, host, message_id, theirs).join(10)
    assert mine.poll(10), "the child process did not answer"
    answer: str = mine.recv()
    return answer


def test_a_released_claim_is_free_for_other_processes_at_once(host: HostClaimer) -> None:
    """After a failed attempt the next delivery, in any worker, runs the handler."""
    result = claim(host, "msg_retry")
    assert isinstance(result, claims.Acquired)
    assert claim_elsewhere(host, "msg_retry") == "Busy"
    assert host.release("noop", "msg_retry", result.token)
    assert claim_elsewhere(host, "msg_retry") == "Acquired"


def test_done_rows_that_cannot_be_written_stay_queued_and_locked(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed write loses nothing: the rows wait, their claims stay held, then land."""
    # No idle timer (delay=60): it could write the rows before the check that they wait.
    host = HostClaimer(engine, str(engine.url.database) + ".claims", delay=60)
    result = claim(host, "msg_1")
    assert isinstance(result, claims.Acquired)
    complete(host, "msg_1", result.token)

    def refuse(*args: Any) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(claims, "record_done_on", refuse)
        with pytest.raises(OSError):
            host.flush()
    assert claim_elsewhere(host, "msg_1") == "Busy"
    host.flush()
    assert state(engine, "msg_1") == "done"
    host.close()


def test_a_claim_whose_read_fails_keeps_no_lock(
    host: HostClaimer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database failing after the lock was taken must not leave the message locked."""

    def unreachable(*args: Any) -> None:
        raise OSError("unable to open database file")

    def unreadable(*args: Any) -> None:
        raise OSError("disk I/O error")

    with monkeypatch.context() as patch:
        patch.setattr(host.engine, "raw_connection", unreachable)
        with pytest.raises(OSError, match="unable to open"):
            claim(host, "msg_1")
    assert claim_elsewhere(host, "msg_1") == "Acquired"
    with monkeypatch.context() as patch:
        patch.setattr(claims, "read_on", unreadable)
        with pytest.raises(OSError, match="disk I/O"):
            claim(host, "msg_1")
    assert claim_elsewhere(host, "msg_1") == "Acquired"
    assert isinstance(claim(host, "msg_1"), claims.Acquired)


def test_a_legacy_running_row_is_respected_until_its_lease_ends(
    host: HostClaimer, engine: Engine
) -> None:
    """A leased row in the table (another claimer's) still holds the message."""
    with engine.begin() as conn:
        claims.claim(conn, "noop", "msg_live", now_ms=now_ms(), lease_ms=LEASE_MS)
        claims.claim(conn, "noop", "msg_dead", now_ms=now_ms(), lease_ms=-1)
    assert isinstance(claim(host, "msg_live"), claims.Busy)
    dead = claim(host, "msg_dead")
    assert isinstance(dead, claims.Acquired)
    complete(host, "msg_dead", dead.token)
    host.flush()
    assert state(engine, "msg_dead") == "done"


@pytest.fixture
def leased(database_url: str, tmp_path: Path) -> Iterator[tuple[Engine, Claimer]]:
    """A row-lease claimer (both dialects) that has completed msg_1, not yet written."""
    engine = make_engine(resolve_url(database_url, str(tmp_path)))
    migrate(engine)
    claimer = Claimer(engine, delay=60)
    first = claim(claimer, "msg_1")
    assert isinstance(first, claims.Acquired)
    complete(claimer, "msg_1", first.token)
    yield engine, claimer
    claimer.close()
    engine.dispose()


def test_leased_claims_write_done_with_the_next_claim(leased: tuple[Engine, Claimer]) -> None:
    """The row-lease claimer commits once per delivery: "done" rides the next claim."""
    engine, claimer = leased
    assert state(engine, "msg_1") == "running"
    assert isinstance(claim(claimer, "msg_1"), claims.Completed)  # from memory
    assert isinstance(claim(claimer, "msg_2"), claims.Acquired)
    assert state(engine, "msg_1") == "done"


def test_leased_completions_survive_a_failed_transaction(
    leased: tuple[Engine, Claimer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim transaction that fails puts the completions it carried back in the queue."""
    engine, claimer = leased

    def fail_in_the_database(driver: Any, *args: Any, **kwargs: Any) -> None:
        driver.cursor().execute("SELECT * FROM no_such_table").fetchone()

    with monkeypatch.context() as patch:
        patch.setattr(claims, "claim_on", fail_in_the_database)
        with pytest.raises(Exception, match="no_such_table"):
            claim(claimer, "msg_2")
    assert state(engine, "msg_1") == "running"
    claimer.flush()
    assert state(engine, "msg_1") == "done"


def claim_meanwhile(claimer: Claimer | HostClaimer, message_id: str, wait: float) -> Any:
    """Claim ``message_id`` in another thread; return what it answered within ``wait``
    seconds (None if it was still waiting) and a function that waits for its answer."""
    answers: list[claims.Claim] = []
    thread = threading.Thread(target=lambda: answers.append(claim(claimer, message_id)))
    thread.start()
    thread.join(timeout=wait)
    early = answers[0] if answers else None

    def final() -> claims.Claim:
        thread.join(timeout=30)
        return answers[0]

    return early, final


def test_a_completion_being_committed_is_replayed_meanwhile(
    leased: tuple[Engine, Claimer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a transaction writes queued completions, a duplicate of one of them in
    another thread gets the stored answer at once: not 503 for the lease, not a wait."""
    engine, claimer = leased
    during: list[Any] = []
    write = claims.complete_on

    def slow_write(driver: Any, dialect: Any, params: dict[str, Any]) -> Any:
        during.append(claim_meanwhile(claimer, "msg_1", wait=2))
        return write(driver, dialect, params)

    monkeypatch.setattr(claims, "complete_on", slow_write)
    claimer.flush()
    [(early, final)] = during
    replay = claims.Completed(status=200, content_type="application/json", body=b'{"ok":true}')
    assert early == replay
    assert final() == replay
    assert state(engine, "msg_1") == "done"


def test_a_written_batch_is_replayed_while_its_locks_are_dropped(
    host: HostClaimer, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between writing a batch and unlocking its claims, a duplicate in another thread
    is never told the message is busy: it waits for the unlock and gets the answer."""
    result = claim(host, "msg_1")
    assert isinstance(result, claims.Acquired)
    complete(host, "msg_1", result.token)
    locks = host._locks()
    release = locks.release
    during: list[Any] = []

    def slow_release(keys: Any) -> None:
        during.append(claim_meanwhile(host, "msg_1", wait=0.5))
        release(keys)

    monkeypatch.setattr(locks, "release", slow_release)
    host.flush()
    monkeypatch.undo()
    [(early, final)] = during
    assert not isinstance(early, claims.Busy)
    assert isinstance(final(), claims.Completed)
