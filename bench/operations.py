"""Throughput of a guarded no-op job with the delivery log + duplicate guard on vs off.

Two gunicorn servers run side by side, identical but for DELIVERY_LOG/DUPLICATE_GUARD;
wrk sends each the same signed no-op delivery with a fresh ``Upstash-Message-Id`` per
request (a repeated id would be a cheap replay), in alternating rounds; medians are
compared. Run once on SQLite (the default store) and, given a URL, on PostgreSQL.

    .venv/bin/python bench/operations.py [--seconds 3] [--rounds 5] [--workers 2]
        [--postgres postgresql+psycopg://…]   (default: $TEST_DATABASE_URL, if set)
        [--handler-ms 5]   (the handler sleeps that long: the cost relative to real work)
        [--random-ids]     (ids in random order, as QStash's are, instead of counting up)
        [--prefill 1000000] (the store already holds that many done claims and log rows)

Counting ids up lands each batch of done claims next to the last one in their B-tree;
random ids, like QStash's, touch a different page per claim, which costs the guard
more. ``--random-ids`` makes ids of QStash's length and shape: a prefix that every id
of a shard shares, then random characters (QStash's are base58 of a shard name and a
random id). ``--prefill`` starts from a store that has been in use, as in production,
where two weeks of done claims are kept: a lookup and an insert then meet a B-tree that
no longer fits in a cache.

This file is also the app gunicorn serves (``operations:app``), configured by env.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from app import create_app  # noqa: E402
from app.delivery import Delivery  # noqa: E402
from app.jobs import JobRegistry  # noqa: E402
from app.qstash.signature import sign  # noqa: E402
from bench._load import wrk  # noqa: E402

CURRENT_KEY = "sig_bench_current_0123456789abcd"
NEXT_KEY = "sig_bench_next_0123456789abcdefg"
APP_URL = "http://127.0.0.1"
BODY = b'{"webhookId":"wh_123","eventType":"order.created","payload":{"id":42}}'

WRK_SCRIPT = """
local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
end
local counter = 0
local prefix = "x"
function init(args)
  prefix = args[1] .. "_" .. tostring(tid)
  math.randomseed(os.time() * 100 + tid)
end
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Upstash-Retried"] = "0"
wrk.headers["Upstash-Signature"] = "{token}"
function request()
  counter = counter + 1
  wrk.headers["Upstash-Message-Id"] = {id}
  return wrk.format(nil, nil, nil, nil)
end
"""
COUNTING_ID = '"msg_" .. prefix .. "_" .. counter'
# A shard's shared prefix, four random 31-bit numbers, then the unique part: about as
# long as a QStash id (67 characters) and in random order like one.
RANDOM_ID = (
    'string.format("msg_26hZCxZCuWyyTWPmSVBrN%08x%08x%08x%08x_%s_%d",'
    " math.random(0, 0x7fffffff), math.random(0, 0x7fffffff), math.random(0, 0x7fffffff),"
    " math.random(0, 0x7fffffff), prefix, counter)"
)


def build() -> Any:
    """Return the benchmark app: one no-op job, the store as the environment says."""
    registry = JobRegistry()

    pause = float(os.environ.get("BENCH_HANDLER_MS", "0")) / 1000

    def noop(payload: Any, delivery: Delivery) -> dict[str, bool]:
        if pause:
            time.sleep(pause)  # a handler that waits on I/O, like most real ones
        return {"ok": True}

    registry.job("noop")(noop)
    config = {
        "QSTASH_CURRENT_SIGNING_KEY": CURRENT_KEY,
        "QSTASH_NEXT_SIGNING_KEY": NEXT_KEY,
        "APP_URL": APP_URL,
    }
    return create_app(config, registry=registry)


if os.environ.get("BENCH_OPERATIONS_APP"):
    app = build()


@contextmanager
def server(tmp: Path, name: str, env: dict[str, str], workers: int) -> Iterator[str]:
    """Run gunicorn serving this module's app with ``env``; yield its base URL."""
    from tests.servers import gunicorn  # noqa: PLC0415

    full_env = {"PYTHONPATH": f"{ROOT}:{HERE}", "BENCH_OPERATIONS_APP": "1", **env}
    args = ("--log-level", "warning")
    with gunicorn(
        tmp, full_env, app="operations:app", workers=workers, args=args, config=False
    ) as s:
        yield s.url


def prefill(database_url: str, count: int) -> None:
    """Put ``count`` done claims and as many log rows (random ids, the past two weeks)
    into the benchmark app's tables."""
    from sqlalchemy import insert  # noqa: PLC0415

    from app.store import get_store  # noqa: PLC0415
    from app.store.schema import claims, deliveries  # noqa: PLC0415

    os.environ.update(DATABASE_URL=database_url, DELIVERY_LOG="1", DUPLICATE_GUARD="1")
    store = get_store(build())
    assert store is not None
    now = int(time.time() * 1000)
    body = b'{"ok":true}'
    for start in range(0, count, 10_000):
        # (message id, completed at): spread evenly over the past two weeks.
        made = [
            (f"msg_26hZCxZCuWyyTWPmSVBrN{uuid.uuid4().hex}{uuid.uuid4().hex[:10]}",
             now - (count - index) * 1_209_600_000 // count)
            for index in range(start, min(start + 10_000, count))
        ]  # fmt: skip
        with store.engine.begin() as conn:
            conn.execute(
                insert(claims),
                [
                    {"job": "noop", "message_id": m, "state": "done", "token": "",
                     "lease_until_ms": at, "claimed_at_ms": at, "completed_at_ms": at,
                     "takeovers": 0, "status": 200, "content_type": "application/json",
                     "body": body}
                    for m, at in made
                ],
            )  # fmt: skip
            conn.execute(
                insert(deliveries),
                [
                    {"at_ms": at, "job": "noop", "message_id": m, "schedule_id": None,
                     "retried": 0, "outcome": "ok", "status": 200, "duration_ms": 1.0,
                     "error": None, "guard": None, "dlq_id": None}
                    for m, at in made
                ],
            )  # fmt: skip
    store.close()


def compare(
    database_url: str,
    seconds: float,
    rounds: int,
    workers: int,
    handler_ms: float = 0,
    random_ids: bool = False,
    prefilled: int = 0,
) -> tuple[float, float, list[float]]:
    """Return the median requests/s (on, off) of alternating rounds against ``database_url``,
    and each round's on/off ratio, sorted."""
    token = sign(BODY, url=APP_URL + "/api/jobs/noop", key=CURRENT_KEY)
    run = uuid.uuid4().hex[:8]
    if prefilled:
        prefill(database_url, prefilled)
    with tempfile.TemporaryDirectory() as name, ExitStack() as stack:
        tmp = Path(name)
        script = tmp / "noop.lua"
        script.write_text(
            WRK_SCRIPT.replace("{body}", BODY.decode())
            .replace("{token}", token)
            .replace("{id}", RANDOM_ID if random_ids else COUNTING_ID)
        )
        common = {
            "DATABASE_URL": database_url,
            "PROMETHEUS_MULTIPROC_DIR": "",  # in-process metrics per worker, as in the off run
            "BENCH_HANDLER_MS": str(handler_ms),
        }
        on = stack.enter_context(
            server(tmp, "on", {**common, "DELIVERY_LOG": "1", "DUPLICATE_GUARD": "1"}, workers)
        )
        off = stack.enter_context(
            server(tmp, "off", {**common, "DELIVERY_LOG": "0", "DUPLICATE_GUARD": "0"}, workers)
        )
        for base in (on, off):
            wrk(base + "/api/jobs/noop", script, 1, threads=2, args=[f"{run}w"])  # warm-up
        measured: dict[str, list[float]] = {"on": [], "off": []}
        for index in range(rounds):
            order = [("on", on), ("off", off)] if index % 2 == 0 else [("off", off), ("on", on)]
            for label, base in order:
                prefix = f"{run}{label}{index}"
                rate = wrk(base + "/api/jobs/noop", script, seconds, threads=2, args=[prefix])
                measured[label].append(rate)
    pairs = sorted(a / b for a, b in zip(measured["on"], measured["off"], strict=True))
    return statistics.median(measured["on"]), statistics.median(measured["off"]), pairs


def report(label: str, on: float, off: float, pairs: list[float]) -> None:
    """Print the medians, their ratio, and the spread of the per-round ratios."""
    print(
        f"{label:<12} log+guard on {on:8.0f} req/s   off {off:8.0f} req/s   ratio {on / off:.3f}"
        f"   (rounds: median {statistics.median(pairs):.3f}, {pairs[0]:.3f}-{pairs[-1]:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per round and mode")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--postgres", default=os.environ.get("TEST_DATABASE_URL"))
    parser.add_argument("--handler-ms", type=float, default=0.0)
    parser.add_argument("--random-ids", action="store_true")
    parser.add_argument("--prefill", type=int, default=0)
    args = parser.parse_args()
    timing = (
        args.seconds, args.rounds, args.workers, args.handler_ms, args.random_ids, args.prefill
    )  # fmt: skip
    ids = "random" if args.random_ids else "counting"
    print(
        f"gunicorn -w {args.workers}, handler {args.handler_ms:g} ms, {args.rounds} rounds,"
        f" {ids} message ids, store prefilled with {args.prefill}"
    )
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_url = f"sqlite:///{tmp}/bench.sqlite3"
        report("SQLite", *compare(sqlite_url, *timing))
    if args.postgres:
        report("PostgreSQL", *compare(args.postgres, *timing))
    else:
        print("PostgreSQL   skipped: pass --postgres URL or set TEST_DATABASE_URL")


if __name__ == "__main__":
    main()
