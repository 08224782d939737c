"""Throughput of a guarded job with the delivery log + duplicate guard on vs off.

Two gunicorn servers run side by side, identical but for DELIVERY_LOG/DUPLICATE_GUARD,
both with ``--config bench/_gunicorn_bare.py`` (gunicorn's defaults spelled out, never a
silent ``./gunicorn.conf.py``); wrk sends each the same signed delivery with a fresh
``Upstash-Message-Id`` per request (a repeated id would be a cheap replay), in rounds
that alternate which side goes first. Prints the median of the per-round on/off ratios
with their min–max. Run on SQLite (the default store) and, given a URL, on PostgreSQL
(in a scratch database created for the run and dropped after it).

    .venv/bin/python bench/operations.py [--seconds 3] [--rounds 5] [--workers 2]
        [--postgres postgresql+psycopg://…]   (default: $TEST_DATABASE_URL, if set)
        [--handler-ms 1]   (the handler sleeps that long, like one waiting on I/O)
        [--random-ids]     (ids in random order, as QStash's are, instead of counting up)
        [--prefill 1000000] (the store already holds that many done claims and log rows)
        [--smoke]          (one 1 s round per database, one worker, no prefill: CI)

Counting ids up lands each claim next to the last one in its B-tree; random ids, like
QStash's, touch a different page per claim, which costs the guard more. ``--random-ids``
makes ids of QStash's length and shape: a prefix that every id of a shard shares, then
random characters (QStash's are base58 of a shard name and a random id). ``--prefill``
starts from a store that has been in use, as in production, where two weeks of done
claims are kept: a claim then meets a B-tree that no longer fits in a cache.

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
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from app import create_app  # noqa: E402
from app.delivery import Delivery  # noqa: E402
from app.jobs import JobRegistry  # noqa: E402
from app.qstash.signature import sign  # noqa: E402
from bench._load import wrk  # noqa: E402
from bench._stats import side_by_side, spread  # noqa: E402

BARE_CONFIG = HERE / "_gunicorn_bare.py"
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
    args = ("--config", str(BARE_CONFIG), "--log-level", "warning")
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


class Settings(NamedTuple):
    """What one comparison runs: rounds of ``seconds`` per side, on gunicorn -w ``workers``."""

    seconds: float
    rounds: int
    workers: int
    handler_ms: float
    random_ids: bool
    prefill: int
    warm_up: bool


def compare(database_url: str, settings: Settings) -> list[tuple[float, float]]:
    """Return requests/s (log+guard on, off) of each round against ``database_url``."""
    token = sign(BODY, url=APP_URL + "/api/jobs/noop", key=CURRENT_KEY)
    run = uuid.uuid4().hex[:8]
    if settings.prefill:
        prefill(database_url, settings.prefill)
    with tempfile.TemporaryDirectory() as name, ExitStack() as stack:
        tmp = Path(name)
        script = tmp / "noop.lua"
        script.write_text(
            WRK_SCRIPT.replace("{body}", BODY.decode())
            .replace("{token}", token)
            .replace("{id}", RANDOM_ID if settings.random_ids else COUNTING_ID)
        )
        common = {
            "DATABASE_URL": database_url,
            "PROMETHEUS_MULTIPROC_DIR": "",  # in-process metrics per worker, on both sides
            "BENCH_HANDLER_MS": str(settings.handler_ms),
        }
        bases = {
            label: stack.enter_context(
                server(tmp, label, {**common, "DELIVERY_LOG": flag, "DUPLICATE_GUARD": flag},
                       settings.workers)
            )
            for label, flag in (("on", "1"), ("off", "0"))
        }  # fmt: skip
        count = iter(range(1_000_000))

        def measure(label: str) -> float:
            prefix = f"{run}{label}{next(count)}"  # ids never repeat across runs
            url = bases[label] + "/api/jobs/noop"
            return wrk(url, script, settings.seconds, threads=2, args=[prefix])

        if settings.warm_up:
            for label in bases:
                wrk(bases[label] + "/api/jobs/noop", script, 1, threads=2, args=[f"{run}w"])
        return side_by_side(settings.rounds, lambda: measure("on"), lambda: measure("off"))


def report(label: str, rounds: list[tuple[float, float]]) -> None:
    """Print each side's median requests/s and the median of per-round ratios, min–max."""
    on = statistics.median(a for a, _ in rounds)
    off = statistics.median(b for _, b in rounds)
    print(
        f"{label:<12} log+guard on {on:8.0f} req/s   off {off:8.0f} req/s"
        f"   on/off {spread([a / b for a, b in rounds])}"
    )


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """Create an empty PostgreSQL database next to ``admin_url``'s; drop it after."""
    from sqlalchemy import create_engine, text  # noqa: PLC0415
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    name = f"qstash_jobs_bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per round and side")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--postgres", default=os.environ.get("TEST_DATABASE_URL"))
    parser.add_argument("--handler-ms", type=float, default=0.0)
    parser.add_argument("--random-ids", action="store_true")
    parser.add_argument("--prefill", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="one 1 s round, one worker (CI)")
    args = parser.parse_args()
    settings = Settings(
        seconds=1 if args.smoke else args.seconds,
        rounds=1 if args.smoke else args.rounds,
        workers=1 if args.smoke else args.workers,
        handler_ms=args.handler_ms,
        random_ids=args.random_ids,
        prefill=0 if args.smoke else args.prefill,
        warm_up=not args.smoke,
    )
    ids = "random" if settings.random_ids else "counting"
    print(
        f"gunicorn -w {settings.workers} --config {BARE_CONFIG.relative_to(ROOT)},"
        f" handler {settings.handler_ms:g} ms, {settings.rounds} rounds of"
        f" {settings.seconds:g} s, {ids} message ids, store prefilled with {settings.prefill}"
    )
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        report("SQLite", compare(f"sqlite:///{tmp}/bench.sqlite3", settings))
    if args.postgres:
        with scratch_database(args.postgres) as url:
            report("PostgreSQL", compare(url, settings))
    else:
        print("PostgreSQL   skipped: pass --postgres URL or set TEST_DATABASE_URL")


if __name__ == "__main__":
    main()
