"""The guard's claims across processes, as gunicorn forks its workers (both databases).

Each case forks a real process: what one worker claimed, completed or released is seen
by another only through the database.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from app.store import Store, claims
from app.store.schema import claims as claims_table

LEASE_MS = 60_000
ANSWER = claims.Completed(status=200, content_type="application/json", body=b'{"ok":true}')


def claim(store: Store, message_id: str, lease_ms: int = LEASE_MS) -> claims.Claim:
    assert store.guard is not None
    return store.guard.claim("noop", message_id, lease_ms)


def won(store: Store, message_id: str, lease_ms: int = LEASE_MS) -> claims.Acquired:
    result = claim(store, message_id, lease_ms)
    assert isinstance(result, claims.Acquired), result
    return result


def in_child(target: Callable[..., None], *args: Any) -> multiprocessing.Process:
    """Start ``target(*args)`` in a forked process, as gunicorn forks its workers."""
    process = multiprocessing.get_context("fork").Process(target=target, args=args)
    process.start()
    return process


def _claim_in_child(store: Store, message_id: str, answer: Any) -> None:
    answer.send(type(claim(store, message_id)).__name__)  # a pipe: sent before we exit
    os._exit(0)


def claim_elsewhere(store: Store, message_id: str) -> str:
    """Claim ``message_id`` in another process (which exits at once); return the result."""
    mine, theirs = multiprocessing.get_context("fork").Pipe()
    in_child(_claim_in_child, store, message_id, theirs).join(10)
    assert mine.poll(10), "the child process did not answer"
    answer: str = mine.recv()
    return answer


def state(store: Store, message_id: str) -> str | None:
    with store.read() as conn:
        query = select(claims_table.c.state).where(claims_table.c.message_id == message_id)
        found: str | None = conn.execute(query).scalar()
    return found


def _hold_then_die(store: Store, message_id: str, held: Any) -> None:
    held.send(type(claim(store, message_id, lease_ms=1500)).__name__)
    os._exit(1)  # a crash: no completion, no release, nothing flushed


def test_a_dead_workers_claim_is_busy_until_its_lease_ends_then_taken_over(
    store: Store,
) -> None:
    """A worker that died holding a claim keeps others out for its lease, no longer."""
    mine, theirs = multiprocessing.get_context("fork").Pipe()
    child = in_child(_hold_then_die, store, "msg_crash", theirs)
    assert mine.poll(10) and mine.recv() == "Acquired"
    child.join(10)
    assert child.exitcode == 1
    busy = claim(store, "msg_crash")
    assert isinstance(busy, claims.Busy) and busy.retry_after in (1, 2)
    time.sleep(1.6)
    taken = claim(store, "msg_crash")
    assert isinstance(taken, claims.Acquired) and taken.takeover


def _complete_in_child(store: Store, message_id: str) -> None:
    assert store.guard is not None
    store.guard.complete("noop", message_id, won(store, message_id).token, ANSWER)
    store.writer.close()  # as a worker's exit does
    os._exit(0)


def test_a_message_done_in_another_process_is_replayed(store: Store) -> None:
    """Once the other worker wrote "done", a duplicate here gets its stored answer."""
    child = in_child(_complete_in_child, store, "msg_done")
    child.join(10)
    assert child.exitcode == 0
    assert state(store, "msg_done") == "done"
    assert claim(store, "msg_done") == ANSWER


def test_a_running_claim_is_busy_for_another_thread_of_the_same_process(store: Store) -> None:
    """Threads of one worker exclude each other like processes do."""
    won(store, "msg_1")
    assert isinstance(claim(store, "msg_1"), claims.Busy)


def test_a_release_frees_the_claim_for_other_processes_once_written(store: Store) -> None:
    """After a failed attempt the next delivery, in any worker, runs the handler: here at
    once, elsewhere once the writer wrote the release."""
    assert store.guard is not None
    store.writer.delay = 3600  # set before its thread starts: nothing written unasked
    store.guard.release("noop", "msg_retry", won(store, "msg_retry").token)
    assert claim_elsewhere(store, "msg_retry") == "Busy"
    assert store.flush()
    assert claim_elsewhere(store, "msg_retry") == "Acquired"


def test_a_release_still_queued_is_written_before_this_process_claims_again(
    store: Store,
) -> None:
    """A retry reaching the worker that just failed it runs the handler, not a 503."""
    assert store.guard is not None
    store.writer.delay = 3600
    store.guard.release("noop", "msg_retry", won(store, "msg_retry").token)
    assert isinstance(claim(store, "msg_retry"), claims.Acquired)


def _flush_in_child(store: Store) -> None:
    store.writer.close()
    os._exit(0)


def test_a_forked_child_never_writes_its_parents_queue(store: Store) -> None:
    """gunicorn forks workers from a master: a child starts with an empty queue and a
    thread of its own; what the parent queued is written by the parent."""
    assert store.guard is not None
    store.writer.delay = 3600
    store.guard.complete("noop", "msg_1", won(store, "msg_1").token, ANSWER)
    child = in_child(_flush_in_child, store)
    child.join(10)
    assert child.exitcode == 0
    assert state(store, "msg_1") == "running"
    assert store.flush()
    assert state(store, "msg_1") == "done"
