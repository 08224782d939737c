"""Completed claims of one host, in LMDB: (job, message id) -> the answer to replay.

On SQLite, which serves one host, the duplicate guard keeps its done claims here, in
``<database>.claims.lmdb``, rather than in the ``claims`` table. QStash's message ids
are random (base58 of a shard name and a random id), so every done claim lands on its
own page of a B-tree, whichever store holds it. SQLite writes that page twice, to its
WAL and again at a checkpoint, with two system calls per page of the WAL, and drops a
reader's page cache whenever another connection commits. LMDB writes each changed page
once per commit, and a read is a lookup in a shared memory map, without a system call.
In ``bench/operations.py --random-ids`` this is the difference between missing and
meeting the guard's throughput target.

Durability: a commit flushes its data pages (one ``fdatasync``), and the meta page that
publishes them rides the next commit (``metasync=False``, LMDB's ``MDB_NOMETASYNC``). A
system crash may undo the last commit but never corrupts the file; an application crash
loses nothing committed. The SQLite tables run with ``synchronous=NORMAL``, which has
the same property, so neither store is the weaker one.

LMDB's rules kept here: a file is opened once per process, shared by every
:class:`DoneStore` on it (a second open would share, then release, the first one's
locks); an environment inherited through ``fork`` is closed in the child, never used;
reader slots left by dead processes are cleared when a process opens the file.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Iterable
from typing import NamedTuple

import lmdb
from sqlalchemy import Engine, Integer, delete, literal_column, select

from app.store.claims import Completed
from app.store.engine import writing
from app.store.schema import claims

#: The most the file may grow to. Address space reserved, not disk: the file grows as it
#: fills. About 500 million done claims at ~500 bytes each (the B-tree included).
MAP_SIZE = 256 << 30
#: Read transactions open at once on this host: threads of every worker.
MAX_READERS = 1024
# LMDB's keys are at most 511 bytes; a longer (job, message id) is stored by its digest.
_KEY_LIMIT = 400
# Format, claimed at (ms), completed at (ms), HTTP status, length of the content type.
_HEAD = struct.Struct(">BqqHH")
_FORMAT = 1
_TIME = struct.Struct(">Q")
_CONTENT_TYPE_LIMIT = 200


class DoneRecord(NamedTuple):
    """A claim marked done: the answer a duplicate of the message gets.

    A named tuple rather than a dataclass: one is built per delivery, at half the cost.
    """

    job: str
    message_id: str
    claimed_at_ms: int
    completed_at_ms: int
    status: int
    content_type: str | None
    body: bytes

    def answer(self) -> Completed:
        """Return the stored answer of this record."""
        return Completed(status=self.status, content_type=self.content_type, body=self.body)


def record_key(job: str, message_id: str) -> bytes:
    """Return the LMDB key of (job, message id)."""
    raw = f"{job}\0{message_id}".encode()
    if len(raw) <= _KEY_LIMIT:
        return raw
    # 0xff never starts UTF-8, so a digest key never equals a plain one.
    return b"\xff" + hashlib.blake2b(raw, digest_size=32).digest()


def _encode(record: DoneRecord) -> bytes:
    content_type = (record.content_type or "")[:_CONTENT_TYPE_LIMIT].encode()
    head = _HEAD.pack(
        _FORMAT,
        record.claimed_at_ms,
        record.completed_at_ms,
        record.status,
        len(content_type),
    )
    return head + content_type + record.body


def _decode(raw: bytes) -> Completed:
    form, _claimed, _completed, status, length = _HEAD.unpack_from(raw)
    if form != _FORMAT:
        raise lmdb.Error(f"done claim stored in an unknown format ({form})")
    start = _HEAD.size + length
    content_type = raw[_HEAD.size : start].decode() or None
    return Completed(status=status, content_type=content_type, body=raw[start:])


class _Environment:
    """This process's LMDB environment on one file and its two databases."""

    def __init__(self, path: str) -> None:
        self.env = lmdb.open(
            path,
            subdir=False,
            map_size=MAP_SIZE,
            max_dbs=2,
            max_readers=MAX_READERS,
            sync=True,
            metasync=False,
            readahead=False,  # random reads: the kernel's read-ahead would only evict
            mode=0o600,
        )
        self.env.reader_check()
        # (job, message id) -> the record; completed at + key -> b"", for expiry in order.
        self.done = self.env.open_db(b"done")
        self.by_time = self.env.open_db(b"by_time")
        self.users = 0


_environments: dict[str, _Environment] = {}
_environments_lock = threading.Lock()
_generation = 0  # counts this process's forks: an older environment is the parent's


def _forked() -> None:
    global _environments_lock, _generation
    _environments_lock = threading.Lock()  # another thread may have held it at the fork
    for inherited in _environments.values():
        try:
            inherited.env.close()  # the parent's: closing the child's copy leaves it be
        except lmdb.Error:
            pass
    _environments.clear()
    _generation += 1


os.register_at_fork(after_in_child=_forked)


class DoneStore:
    """Done claims in the LMDB file at ``path``, opened on first use in each process."""

    def __init__(self, path: str) -> None:
        self.path = os.path.realpath(path)
        self._opened: _Environment | None = None
        self._generation = -1

    def get(self, job: str, message_id: str) -> Completed | None:
        """Return the stored answer of (job, message id), or None if it is not done."""
        opened = self._environment()
        with opened.env.begin(db=opened.done) as txn:
            raw = txn.get(record_key(job, message_id))
        return None if raw is None else _decode(raw)

    def put(self, records: Iterable[DoneRecord]) -> int:
        """Store ``records`` in one durable commit; return how many were new.

        A record whose message is already done is skipped: the first answer stays.
        """
        opened = self._environment()
        added = 0
        with opened.env.begin(write=True) as txn:
            for record in records:
                key = record_key(record.job, record.message_id)
                if txn.put(key, _encode(record), overwrite=False, db=opened.done):
                    txn.put(_TIME.pack(record.completed_at_ms) + key, b"", db=opened.by_time)
                    added += 1
        return added

    def count(self) -> int:
        """Return how many done claims are stored."""
        if not self._exists():
            return 0
        opened = self._environment()
        with opened.env.begin() as txn:
            return int(txn.stat(opened.done)["entries"])

    def expire(self, before_ms: int, *, chunk: int = 10_000) -> int:
        """Delete the claims completed before ``before_ms``; return how many.

        In transactions of at most ``chunk`` deletions, so that claims keep landing.
        """
        if not self._exists():
            return 0
        opened = self._environment()
        opened.env.reader_check()  # a dead reader would pin the pages freed here
        limit = _TIME.pack(max(before_ms, 0))
        deleted = 0
        while True:
            removed = 0
            with opened.env.begin(write=True) as txn:
                cursor = txn.cursor(db=opened.by_time)
                more = cursor.first()
                while more and removed < chunk:
                    entry = cursor.key()
                    if entry[: _TIME.size] >= limit:
                        break
                    txn.delete(entry[_TIME.size :], db=opened.done)
                    cursor.delete()  # and on to the next entry, if any
                    more = bool(cursor.key())
                    removed += 1
            deleted += removed
            if removed < chunk:
                return deleted

    def adopt(self, engine: Engine, *, chunk: int = 1000) -> int:
        """Move the done rows of the SQLite ``claims`` table into this store.

        Code before schema version 3 kept them there, and so may a worker of that code
        still finishing its requests during a reload. Each chunk is stored (durably)
        before its rows are deleted, so a crash in between only repeats the move.
        """
        rowid = literal_column("rowid", Integer())
        query = (
            select(
                rowid,
                claims.c.job,
                claims.c.message_id,
                claims.c.claimed_at_ms,
                claims.c.completed_at_ms,
                claims.c.status,
                claims.c.content_type,
                claims.c.body,
            )
            .where(claims.c.state == "done")
            .limit(chunk)
        )
        moved = 0
        while True:
            with writing(engine) as conn:
                rows = conn.execute(query).all()
                if not rows:
                    return moved
                self.put(
                    DoneRecord(
                        job=row.job,
                        message_id=row.message_id,
                        claimed_at_ms=row.claimed_at_ms,
                        completed_at_ms=row.completed_at_ms or row.claimed_at_ms,
                        status=row.status or 200,
                        content_type=row.content_type,
                        body=bytes(row.body or b""),
                    )
                    for row in rows
                )
                conn.execute(delete(claims).where(rowid.in_([row[0] for row in rows])))
            moved += len(rows)

    def close(self) -> None:
        """Stop using the file; the process closes it when its last store stops."""
        with _environments_lock:
            opened, self._opened = self._opened, None
            if opened is None or self._generation != _generation:
                return
            opened.users -= 1
            if opened.users == 0:
                del _environments[self.path]
                opened.env.close()

    def _exists(self) -> bool:
        # Expiry and counting do not create the file for a guard that never ran here.
        return self._opened is not None or os.path.exists(self.path)

    def _environment(self) -> _Environment:
        opened = self._opened
        if opened is not None and self._generation == _generation:
            return opened
        with _environments_lock:
            if self._opened is None or self._generation != _generation:
                shared = _environments.get(self.path)
                if shared is None:
                    shared = _environments[self.path] = _Environment(self.path)
                shared.users += 1
                self._opened, self._generation = shared, _generation
            return self._opened
