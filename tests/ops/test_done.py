"""SQLite's done claims in LMDB: storage, expiry, the move from the table, processes.

The cross-process cases fork or start real processes: LMDB's locks and reader slots are
per process, and a dead writer must not stop the others.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, select

from app import create_app
from app.store import claims, done_path, get_store
from app.store.claims import Completed
from app.store.done import DoneRecord, DoneStore
from app.store.engine import database_url as resolve_url
from app.store.engine import make_engine
from app.store.schema import claims as claims_table
from app.store.schema import migrate, schema_version
from app.testing import DeliveryClient
from tests.conftest import Calls, make_registry
from tests.ops.conftest import close_store, ops_config

DAY_MS = 86_400_000


def record(message_id: str, at_ms: int = 1_000, **answer: Any) -> DoneRecord:
    values = {"status": 200, "content_type": "application/json", "body": b'{"ok":true}'}
    values.update(answer)
    return DoneRecord("noop", message_id, at_ms - 5, at_ms, **values)


@pytest.fixture
def done(tmp_path: Path) -> Iterator[DoneStore]:
    store = DoneStore(str(tmp_path / "store.sqlite3.claims.lmdb"))
    yield store
    store.close()


def test_a_stored_answer_comes_back_exactly(done: DoneStore) -> None:
    """Status, content type (or none) and body, binary included, survive the round trip."""
    done.put(
        [
            record("msg_json"),
            record("msg_bare", status=204, content_type=None, body=b""),
            record("msg_bytes", content_type="image/webp", body=bytes(range(256)) * 10),
        ]
    )
    assert done.get("noop", "msg_json") == Completed(200, "application/json", b'{"ok":true}')
    assert done.get("noop", "msg_bare") == Completed(204, None, b"")
    assert done.get("noop", "msg_bytes") == Completed(200, "image/webp", bytes(range(256)) * 10)
    assert done.get("noop", "msg_other") is None
    assert done.get("other-job", "msg_json") is None  # the key is (job, message id)
    assert done.count() == 3


def test_the_first_answer_stays(done: DoneStore) -> None:
    """A second record for a done message (a race lost elsewhere) never replaces the first."""
    assert done.put([record("msg_1", body=b"first")]) == 1
    assert done.put([record("msg_1", body=b"second"), record("msg_2")]) == 1
    answer = done.get("noop", "msg_1")
    assert answer is not None and answer.body == b"first"
    assert done.count() == 2


def test_keys_past_lmdbs_limit_are_stored_by_digest(done: DoneStore) -> None:
    """LMDB keys stop at 511 bytes; a long job name and id (multi-byte too) still work."""
    long_id = "msg_" + "é" * 200  # 404 bytes of UTF-8
    long_job = "j" * 100
    done.put([DoneRecord(long_job, long_id, 1, 2, 200, None, b"long")])
    answer = done.get(long_job, long_id)
    assert answer is not None and answer.body == b"long"
    assert done.get(long_job, long_id[:-1]) is None


def test_expiry_deletes_only_claims_completed_before_the_cutoff(done: DoneStore) -> None:
    """In chunks, so that a large expiry never holds the writer for long."""
    now = 100 * DAY_MS
    done.put([record(f"old_{i}", now - 15 * DAY_MS + i) for i in range(7)])
    done.put([record(f"new_{i}", now - 13 * DAY_MS + i) for i in range(3)])
    assert done.expire(now - 14 * DAY_MS, chunk=3) == 7
    assert done.count() == 3
    assert all(done.get("noop", f"old_{i}") is None for i in range(7))
    assert all(done.get("noop", f"new_{i}") is not None for i in range(3))
    assert done.expire(now - 14 * DAY_MS) == 0
    assert done.expire(now) == 3
    assert done.count() == 0


def test_an_expired_message_can_be_done_again(done: DoneStore) -> None:
    """After expiry the message is new: its next answer is stored, and expires in turn."""
    done.put([record("msg_1", 1_000, body=b"first")])
    assert done.expire(2_000) == 1
    done.put([record("msg_1", 3_000, body=b"second")])
    answer = done.get("noop", "msg_1")
    assert answer is not None and answer.body == b"second"
    assert done.expire(2_000) == 0
    assert done.expire(4_000) == 1


def test_expiry_and_counting_never_create_the_file(tmp_path: Path) -> None:
    """The cron job expires claims on a host whose guard never ran: nothing to create."""
    path = tmp_path / "never.lmdb"
    store = DoneStore(str(path))
    assert store.expire(10**15) == 0
    assert store.count() == 0
    assert not path.exists()
    store.close()


def test_two_stores_of_one_process_share_one_environment(tmp_path: Path) -> None:
    """LMDB refuses a second open of a file in one process; stores on it share the open
    one, which closes with the last of them."""
    path = str(tmp_path / "shared.lmdb")
    first, second = DoneStore(path), DoneStore(path)
    first.put([record("msg_1")])
    assert second.get("noop", "msg_1") is not None
    first.close()
    assert second.get("noop", "msg_1") is not None  # still open for the second
    second.close()
    third = DoneStore(path)  # closed with the last: opening again works
    assert third.get("noop", "msg_1") is not None
    third.close()


def _use_after_fork(done: DoneStore, answer: Any) -> None:
    try:
        found = done.get("noop", "msg_parent")
        done.put([record("msg_child")])
        answer.send(found is not None)
    except BaseException as exc:
        answer.send(repr(exc))
    os._exit(0)


def test_a_forked_child_opens_its_own_environment(done: DoneStore) -> None:
    """gunicorn forks workers: the parent's open environment must not be used by them."""
    done.put([record("msg_parent")])
    mine, theirs = multiprocessing.get_context("fork").Pipe()
    child = multiprocessing.get_context("fork").Process(target=_use_after_fork, args=(done, theirs))
    child.start()
    child.join(10)
    assert mine.poll(5) and mine.recv() is True
    assert done.get("noop", "msg_child") is not None  # the parent's still works
    done.put([record("msg_after")])


WRITER_DIES = textwrap.dedent(
    """
    import os, signal, sys
    from app.store.done import DoneStore, DoneRecord
    store = DoneStore(sys.argv[1])
    env = store._environment().env
    txn = env.begin(write=True)  # LMDB's writer lock, held across processes
    print("holding", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_writer_killed_mid_commit_does_not_block_the_others(done: DoneStore) -> None:
    """LMDB's writer lock is a robust mutex: the next writer recovers it from a dead one."""
    done.put([record("msg_before")])
    with subprocess.Popen(
        [sys.executable, "-c", WRITER_DIES, done.path],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    ) as child:
        assert child.stdout is not None and child.stdout.readline().strip() == "holding"
        assert child.wait(10) == -signal.SIGKILL
    wrote = threading.Event()

    def write() -> None:
        done.put([record("msg_after")])
        wrote.set()

    threading.Thread(target=write, daemon=True).start()
    assert wrote.wait(10), "the dead writer's lock was never recovered"
    assert done.get("noop", "msg_after") is not None
    assert done.get("noop", "msg_before") is not None


@pytest.fixture
def old_database(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite database as code before schema version 3 left it: done rows in the table."""
    engine = make_engine(resolve_url(f"sqlite:///{tmp_path / 'store.sqlite3'}", str(tmp_path)))
    migrate(engine)
    now = int(time.time() * 1000)
    with engine.begin() as conn:
        conn.execute(delete(schema_version).where(schema_version.c.version == 3))
        for index in range(5):
            won = claims.claim(conn, "noop", f"msg_{index}", now_ms=now, lease_ms=60_000)
            assert isinstance(won, claims.Acquired)
            claims.complete(
                conn,
                "noop",
                f"msg_{index}",
                won.token,
                now_ms=now,
                status=200,
                content_type="application/json",
                body=b'{"old":true}',
            )
        claims.claim(conn, "noop", "msg_running", now_ms=now, lease_ms=60_000)
    yield engine
    engine.dispose()


def table_states(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        query = select(claims_table.c.state, func.count()).group_by(claims_table.c.state)
        return {state: count for state, count in conn.execute(query)}


def test_done_rows_of_older_code_move_into_the_store(old_database: Engine) -> None:
    """Each chunk is stored before it is deleted; running rows stay for expiry."""
    done = DoneStore(done_path(old_database))
    assert done.adopt(old_database, chunk=2) == 5
    assert table_states(old_database) == {"running": 1}
    assert done.count() == 5
    assert done.get("noop", "msg_3") == Completed(200, "application/json", b'{"old":true}')
    assert done.adopt(old_database) == 0  # nothing left: a second run moves nothing
    done.close()


def test_a_move_interrupted_after_storing_is_finished_by_the_next(old_database: Engine) -> None:
    """A crash between the store's commit and the table's leaves rows in both; the next
    move stores nothing twice and deletes them."""
    done = DoneStore(done_path(old_database))
    with old_database.connect() as conn:
        rows = conn.execute(select(claims_table).where(claims_table.c.state == "done")).all()
    done.put([DoneRecord(r.job, r.message_id, 0, 1, 201, None, b"kept") for r in rows[:2]])
    assert done.adopt(old_database) == 5
    assert done.count() == 5
    assert table_states(old_database) == {"running": 1}
    kept = done.get("noop", rows[0].message_id)
    assert kept is not None and kept.body == b"kept"  # the first answer stays
    done.close()


def test_an_app_started_on_an_older_database_replays_its_done_messages(
    old_database: Engine, tmp_path: Path, calls: Calls
) -> None:
    """Upgrading loses no done claim: the first start moves them, the guard finds them."""
    app = create_app(ops_config(str(old_database.url)), registry=make_registry(calls))
    store = get_store(app)
    assert store is not None and store.done is not None
    assert table_states(old_database) == {"running": 1}
    replay = DeliveryClient(app).deliver("noop", {}, message_id="msg_2", retried=1)
    assert (replay.status_code, replay.get_json()) == (200, {"old": True})
    assert replay.headers["X-Duplicate-Delivery"] == "replayed"
    assert len(calls) == 0
    close_store(app)


def test_expiry_also_moves_rows_an_older_worker_wrote_late(
    old_database: Engine, tmp_path: Path, calls: Calls
) -> None:
    """During a reload a worker of older code may still write done rows to the table after
    the new code started; check-expiries moves them, then expires by completion time."""
    app = create_app(ops_config(str(old_database.url)), registry=make_registry(calls))
    store = get_store(app)
    assert store is not None and store.done is not None
    now = int(time.time() * 1000)
    with old_database.begin() as conn:  # the late row, as the older code wrote it
        won = claims.claim(conn, "noop", "msg_late", now_ms=now, lease_ms=60_000)
        assert isinstance(won, claims.Acquired)
        claims.complete(
            conn, "noop", "msg_late", won.token, now_ms=now, status=200,
            content_type=None, body=b"late",
        )  # fmt: skip
    assert store.expire(now + DAY_MS, log_days=30, claim_days=14) == (0, 0)
    assert table_states(old_database) == {"running": 1}
    assert store.done.get("noop", "msg_late") == Completed(200, None, b"late")
    assert store.expire(now + 15 * DAY_MS, log_days=30, claim_days=14) == (0, 7)
    assert store.done.count() == 0 and table_states(old_database) == {}
    close_store(app)
