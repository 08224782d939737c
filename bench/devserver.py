"""Benchmark: end-to-end deliveries/s through the dev server, and delayed-message lateness.

    .venv/bin/python bench/devserver.py [--rounds 3] [--seconds 10] [--rate 600] [--smoke]

The app runs under gunicorn with ``--config bench/_gunicorn_bare.py`` (gunicorn's defaults
spelled out: sync workers, no access log, no preload) and ``--workers N --log-level
warning``; the dev server is ``flask qstash dev`` in its own process. Each round runs,
back to back on this machine:
1. direct: signed POSTs straight to the no-op job of the app (the ceiling);
2. e2e: publish (``/v2/batch``) → dev server → signed delivery → the same app, at a fixed
   offered rate for ``--seconds``; counts what was delivered from the dev server's SQLite
   file and checks nothing is lost.
Then lateness: delayed messages (``Upstash-Not-Before``) against their due time, p50/p99.
Prints the median of the per-round ratios e2e/direct and delivered/offered with their
min–max; exits 1 if a message was lost or a delayed one never arrived. ``--smoke``: one
round of a second at 100/s and one run of 10 delayed messages (CI: the same code path in
seconds).
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import DEV_IDENTITY  # noqa: E402
from app.qstash.signature import sign  # noqa: E402
from bench._stats import spread  # noqa: E402
from tests.devserver.processes import start_dev_server  # noqa: E402
from tests.servers import free_port, gunicorn, stop  # noqa: E402

TOKEN = {"Authorization": f"Bearer {DEV_IDENTITY['QSTASH_TOKEN']}"}
BATCH = 50
BARE_CONFIG = Path(__file__).resolve().parent / "_gunicorn_bare.py"


def direct(app_url: str, seconds: float, threads: int = 16) -> float:
    """Return signed no-op requests/s made straight to the app."""
    url = f"{app_url}/api/jobs/noop"
    stop_at = time.monotonic() + seconds
    counts = [0] * threads

    def worker(index: int) -> None:
        with httpx.Client() as client:
            while time.monotonic() < stop_at:
                body = b"{}"
                signature = sign(body, url=url, key=DEV_IDENTITY["QSTASH_CURRENT_SIGNING_KEY"])
                headers = {"Upstash-Signature": signature, "Content-Type": "application/json"}
                assert client.post(url, content=body, headers=headers).status_code == 200
                counts[index] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return sum(counts) / (time.monotonic() - started)


def delivered(db: Path, since: float = 0) -> int:
    """Count messages delivered (a 200 attempt) according to the dev server's database."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT message_id) FROM attempts WHERE status = 200 AND at >= ?",
            (since,),
        ).fetchone()
    return int(row[0])


def publish_load(
    api: httpx.Client, url: str, rate: float, seconds: float
) -> tuple[set[str], float]:
    """Publish at ``rate`` messages/s for ``seconds`` in batches; return ids and elapsed."""
    ids: set[str] = set()
    interval = BATCH / rate
    started = time.monotonic()
    for tick in range(int(rate * seconds / BATCH)):
        target = started + tick * interval
        time.sleep(max(0.0, target - time.monotonic()))
        batch = [
            {"destination": url, "body": "{}", "headers": {"Content-Type": "application/json"}}
            for _ in range(BATCH)
        ]
        response = api.post("/v2/batch", json=batch)
        response.raise_for_status()
        ids |= {answer["messageId"] for answer in response.json()}
    return ids, time.monotonic() - started


def e2e(api: httpx.Client, db: Path, app_url: str, rate: float, seconds: float) -> dict[str, float]:
    """Measure deliveries/s during a ``seconds``-long load at ``rate``, then drain."""
    since = time.time()
    url = f"{app_url}/api/jobs/noop"
    ids, elapsed = publish_load(api, url, rate, seconds)
    during = delivered(db, since)
    drain_started = time.monotonic()
    while delivered(db, since) < len(ids) and time.monotonic() - drain_started < 120:
        time.sleep(0.2)
    total = delivered(db, since)
    last = _last_delivery(db)
    return {
        "published": len(ids),
        "delivered": total,
        "lost": len(ids) - total,
        "during_load_per_s": during / elapsed,
        "overall_per_s": total / (last - since),
        "drain_s": time.monotonic() - drain_started,
    }


def _last_delivery(db: Path) -> float:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return float(conn.execute("SELECT max(at) FROM attempts").fetchone()[0])


def lateness(
    api: httpx.Client, db: Path, app_url: str, count: int, per_second: int, lead: float
) -> list[float]:
    """Publish ``count`` messages, ``per_second`` of them due at each second from ``lead``
    seconds on; return each first attempt's start minus its due time, in ms."""
    url = f"{app_url}/api/jobs/noop"
    base = math.ceil(time.time() + lead)
    due: dict[str, float] = {}
    for first in range(0, count, BATCH):
        batch = [
            {
                "destination": url,
                "body": "{}",
                "headers": {"Upstash-Not-Before": str(base + n // per_second)},
            }
            for n in range(first, min(count, first + BATCH))
        ]
        for n, answer in enumerate(api.post("/v2/batch", json=batch).json(), start=first):
            due[answer["messageId"]] = base + n // per_second
    deadline = time.time() + 30 + count / per_second
    starts: dict[str, float] = {}
    while time.time() < deadline and len(starts) < len(due):
        time.sleep(0.5)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute(
                "SELECT message_id, min(at - latency_ms / 1000.0) FROM attempts"
                f" WHERE message_id IN ({','.join('?' * len(due))}) GROUP BY message_id",
                list(due),
            ).fetchall()
        starts = dict(rows)
    return [(starts[m] - due[m]) * 1000 for m in due if m in starts]


def percentiles(values: list[float]) -> str:
    """Return p50/p99/max of ``values`` as text."""
    ordered = sorted(values)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    return f"p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms, max {ordered[-1]:.1f} ms"


def rounds(
    api: httpx.Client, db: Path, app_url: str, args: argparse.Namespace
) -> tuple[list[float], list[float], int]:
    """Run direct then e2e in each round; return the per-round ratios and messages lost."""
    per_direct, per_offered, lost = [], [], 0
    for number in range(1, args.rounds + 1):
        ceiling = direct(app_url, args.direct_seconds)
        result = e2e(api, db, app_url, args.rate, args.seconds)
        lost += int(result["lost"])
        per_direct.append(result["overall_per_s"] / ceiling)
        per_offered.append(result["during_load_per_s"] / args.rate)
        print(
            f"round {number}: direct {ceiling:.0f}/s; e2e offered {args.rate:.0f}/s for"
            f" {args.seconds:g} s: {result['during_load_per_s']:.0f}/s during load,"
            f" {result['overall_per_s']:.0f}/s overall, drain {result['drain_s']:.1f} s,"
            f" {result['published']:.0f} published, {result['delivered']:.0f} delivered,"
            f" lost {result['lost']:.0f}"
        )
    return per_direct, per_offered, lost


def main() -> int:
    """Run the rounds and the lateness runs; print them; 1 if anything was lost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10, help="e2e load per round")
    parser.add_argument("--direct-seconds", type=float, default=3, help="direct per round")
    parser.add_argument("--rate", type=float, default=600, help="offered messages/s")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--delayed", type=int, default=400)
    parser.add_argument("--smoke", action="store_true", help="one short round (CI)")
    args = parser.parse_args()
    lead, due_per_second = 3.0, (20, 200)
    if args.smoke:
        args.rounds, args.seconds, args.direct_seconds, args.rate = 1, 1, 1, 100
        args.workers, args.delayed, lead, due_per_second = 1, 10, 0.5, (20,)
    failed = False
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        port, app_port = free_port(), free_port()
        app_url = f"http://127.0.0.1:{app_port}"
        env = {
            "QSTASH_DEV": "1",
            "APP_URL": app_url,
            "JOBS_PACKAGES": "tests.devserver.jobs_fixture",
            "FIXTURE_STATE_DIR": tmp_name,
            "QSTASH_URL": f"http://127.0.0.1:{port}",
            # The dev server's throughput, with the app's receiver alone: the delivery log,
            # duplicate guard and metrics have their own benchmark (bench/operations.py).
            "DELIVERY_LOG": "0",
            "DUPLICATE_GUARD": "0",
            "METRICS": "0",
            "GUNICORN_CMD_ARGS": "",
        }
        db = tmp / "qstash.db"
        server = start_dev_server(port, db, tmp / "dev.log")
        try:
            with (
                gunicorn(
                    tmp,
                    env,
                    port=app_port,
                    workers=args.workers,
                    args=("--config", str(BARE_CONFIG), "--log-level", "warning"),
                    config=False,
                ),
                httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=TOKEN, timeout=30) as api,
            ):
                print(f"app: gunicorn {BARE_CONFIG.name} -w {args.workers} (sync workers)")
                per_direct, per_offered, lost = rounds(api, db, app_url, args)
                print(f"ratio e2e/direct: {spread(per_direct)}")
                print(f"delivered/offered during load: {spread(per_offered)}")
                failed = lost > 0
                for per_second in due_per_second:
                    late = lateness(api, db, app_url, args.delayed, per_second, lead)
                    print(
                        f"lateness of {len(late)}/{args.delayed} delayed messages"
                        f" ({per_second} due at each second) against their due time:"
                        f" {percentiles(late) if late else 'none arrived'}"
                    )
                    failed = failed or len(late) < args.delayed
        finally:
            stop(server)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
