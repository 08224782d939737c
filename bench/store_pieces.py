"""What each piece of the delivery log + duplicate guard costs per delivery, in µs.

One process, no HTTP: each piece is timed alone on the store the app uses, SQLite and,
given a URL, PostgreSQL (in a scratch database), optionally prefilled like production
(``--prefill``: done claims and log rows with QStash-shaped random ids). Printed: the
median and mean of per-delivery times over ``--deliveries`` fresh random message ids.

    .venv/bin/python bench/store_pieces.py [--deliveries 3000] [--prefill 1000000]
        [--postgres postgresql+psycopg://…]   (default: $TEST_DATABASE_URL, if set)
        [--smoke]                             (200 deliveries, no prefill: CI)

Pieces: the claim as the guard runs it (a DBAPI connection of the thread, behind the
SQLite write queue), the same claim through SQLAlchemy's ``Connection`` (what the fast
path saves), the write queue's ``flock`` alone, and the writer's batch (completion and
log row of each delivery, ``Writer.batch`` at a time), per delivery.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from operations import build, prefill, scratch_database  # noqa: E402

from app.store import Store, claims, get_store  # noqa: E402
from app.store.engine import write_lock, writing  # noqa: E402

JOB = "noop"
LEASE_MS = 150_000
ANSWER = claims.Completed(status=200, content_type="application/json", body=b'{"ok":true}')


def message_id() -> str:
    """A fresh id shaped like QStash's: a shard's shared prefix, then random characters."""
    return f"msg_26hZCxZCuWyyTWPmSVBrN{secrets.token_hex(21)}"


def timed(piece: Callable[[], Any], count: int) -> list[float]:
    """Return the seconds each of ``count`` calls of ``piece`` took."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        piece()
        times.append(time.perf_counter() - started)
    return times


def measure(store: Store, deliveries: int) -> dict[str, list[float]]:
    """Return per-delivery seconds of each piece on ``store``."""
    guard = store.guard
    assert guard is not None
    results: dict[str, list[float]] = {}
    results["claim, as the guard runs it"] = timed(
        lambda: guard.claim(JOB, message_id(), LEASE_MS), deliveries
    )

    def through_sqlalchemy() -> None:
        with writing(guard.engine) as conn:
            claims.claim(conn, JOB, message_id(), now_ms=int(time.time() * 1000), lease_ms=LEASE_MS)

    results["claim through SQLAlchemy's Connection"] = timed(through_sqlalchemy, deliveries)

    def queue_alone() -> None:
        with write_lock(guard.engine):
            pass

    results["write queue (flock), uncontended"] = timed(queue_alone, deliveries)
    results["writer: completion + log row"] = writer_per_delivery(store, deliveries)
    return results


def writer_per_delivery(store: Store, deliveries: int) -> list[float]:
    """Queue the completion and log row of each delivery; time each batch's write."""
    guard, writer = store.guard, store.writer
    assert guard is not None
    row = {"job": JOB, "schedule_id": None, "retried": 0, "outcome": "ok", "status": 200,
           "duration_ms": 1.0, "error": None, "guard": None, "dlq_id": None}  # fmt: skip
    per_delivery = []
    for _ in range(deliveries // writer.batch):
        for _ in range(writer.batch):
            mid = message_id()
            won = guard.claim(JOB, mid, LEASE_MS)
            assert isinstance(won, claims.Acquired)
            guard.complete(JOB, mid, won.token, ANSWER)
            writer.submit({**row, "message_id": mid, "at_ms": int(time.time() * 1000)})
        started = time.perf_counter()
        assert writer.flush()
        per_delivery.append((time.perf_counter() - started) / writer.batch)
    return per_delivery


def report(label: str, results: dict[str, list[float]]) -> None:
    """Print each piece's median and mean per delivery, in µs."""
    print(label)
    for piece, seconds in results.items():
        median, mean = statistics.median(seconds) * 1e6, statistics.mean(seconds) * 1e6
        print(f"  {piece:<42} median {median:7.1f} µs   mean {mean:7.1f} µs")


def run(label: str, database_url: str, deliveries: int, prefilled: int) -> None:
    if prefilled:
        prefill(database_url, prefilled)
    os.environ.update(DATABASE_URL=database_url, DELIVERY_LOG="1", DUPLICATE_GUARD="1")
    store = get_store(build())
    assert store is not None
    store.writer.delay = 3600  # set before its thread starts: only the batches write
    try:
        timed(lambda: store.guard and store.guard.claim(JOB, message_id(), LEASE_MS), 100)
        report(label, measure(store, deliveries))
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--prefill", type=int, default=0)
    parser.add_argument("--postgres", default=os.environ.get("TEST_DATABASE_URL"))
    parser.add_argument("--smoke", action="store_true", help="200 deliveries, no prefill (CI)")
    args = parser.parse_args()
    deliveries = 200 if args.smoke else args.deliveries
    prefilled = 0 if args.smoke else args.prefill
    print(f"{deliveries} deliveries, random message ids, store prefilled with {prefilled}")
    with tempfile.TemporaryDirectory() as tmp:
        run("SQLite", f"sqlite:///{tmp}/pieces.sqlite3", deliveries, prefilled)
    if args.postgres:
        with scratch_database(args.postgres) as url:
            run("PostgreSQL", url, deliveries, prefilled)
    else:
        print("PostgreSQL skipped: pass --postgres URL or set TEST_DATABASE_URL")


if __name__ == "__main__":
    main()
