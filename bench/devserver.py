"""Benchmark: a burst through the dev server against the app's own ceiling; CPU; lateness.

    .venv/bin/python bench/devserver.py [--rounds 5] [--burst 2000] [--smoke]

The app (the no-op job of ``tests.devserver.jobs_fixture``) runs under gunicorn with
``--config bench/_gunicorn_bare.py`` (gunicorn's defaults spelled out: sync workers, no
access log, no preload) and ``--workers N --log-level warning``; the dev server is
``flask qstash dev`` in its own process, printing its one line per attempt to a file.
Each round runs, back to back on this machine:

1. ceiling: ``wrk -t1 -c8`` sends the app the very request the dev server sends (same
   body, a valid signature, ``Upstash-Message-Id``/``-Retried``, ``User-Agent``);
2. burst: ``--burst`` messages published at once (``/v2/batch``, 100 a call) → dev server
   → signed delivery → the same app; its rate is the messages over the time from the
   first publish to the last delivery, counted from the dev server's SQLite file; its CPU
   is the dev server process's user + system time over the burst (``/proc``), per message.

Printed: the median of the per-round ratios burst/ceiling with min–max, the median CPU per
delivery with min–max, and any message lost. Then the lateness of delayed messages
(first attempt's start minus due time, p50/p99/max), two ways:

- spread: ``--due-rate`` messages a second published one by one with ``Upstash-Delay``,
  so they come due at that rate, each at its own time, while the next ones are published.
  The due time is taken as the publish call's start + the delay: the publish round trip
  counts as lateness, never the other way;
- same second: ``--due-rate`` messages with one ``Upstash-Not-Before`` second each. The
  last of them cannot start before ``due-rate`` deliveries have run, so its lateness is
  bounded below by due-rate / ceiling whatever the server does (printed beside it).

Exits 1 if a message was lost or a delayed one never arrived. ``--smoke``: one round with a
1 s ceiling and a burst of 100, 20 delayed messages each way (CI: the same code path in
seconds).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import DEV_IDENTITY  # noqa: E402
from app.qstash.signature import sign  # noqa: E402
from bench._load import post_script, wrk  # noqa: E402
from bench._stats import spread  # noqa: E402
from tests.devserver.processes import start_dev_server  # noqa: E402
from tests.servers import free_port, gunicorn, stop  # noqa: E402

TOKEN = {"Authorization": f"Bearer {DEV_IDENTITY['QSTASH_TOKEN']}"}
BATCH = 100
BODY = "{}"
BARE_CONFIG = Path(__file__).resolve().parent / "_gunicorn_bare.py"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK  # utime, stime


def ceiling(url: str, tmp: Path, seconds: float) -> float:
    """Return the requests/s wrk gets from the app for the dev server's own request."""
    # One valid token serves a whole run (it binds the URL and the body, and lives five
    # minutes); the app keeps no replay state here.
    token = sign(BODY.encode(), url=url, key=DEV_IDENTITY["QSTASH_CURRENT_SIGNING_KEY"])
    headers = {
        "Content-Type": "application/json",
        "Upstash-Signature": token,
        "Upstash-Message-Id": "msg_bench_ceiling",
        "Upstash-Retried": "0",
        "User-Agent": "Upstash-QStash",
    }
    return wrk(url, post_script(tmp / "delivery.lua", BODY, headers), seconds)


def delivered(db: Path, since: float) -> tuple[int, float]:
    """Return how many messages had a 200 attempt since ``since``, and the last one's time."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        count, last = conn.execute(
            "SELECT count(DISTINCT message_id), max(at) FROM attempts"
            " WHERE status = 200 AND at >= ?",
            (since,),
        ).fetchone()
    return int(count), float(last or since)


@dataclass
class Burst:
    """One burst's outcome."""

    published: int
    delivered: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        """Deliveries per second, first publish to last delivery."""
        return self.delivered / self.seconds

    @property
    def cpu_us(self) -> float:
        """Dev-server CPU per delivery, in microseconds."""
        return self.cpu_seconds / max(1, self.delivered) * 1e6


def burst(api: httpx.Client, db: Path, url: str, pid: int, count: int) -> Burst:
    """Publish ``count`` messages at once, wait for every delivery; time it and its CPU."""
    ids: set[str] = set()
    cpu_before, started = cpu_seconds(pid), time.time()
    for first in range(0, count, BATCH):
        batch = [
            {"destination": url, "body": BODY, "headers": {"Content-Type": "application/json"}}
            for _ in range(first, min(count, first + BATCH))
        ]
        response = api.post("/v2/batch", json=batch)
        response.raise_for_status()
        ids |= {answer["messageId"] for answer in response.json()}
    done, last = delivered(db, started)
    deadline = time.monotonic() + 120
    while done < len(ids) and time.monotonic() < deadline:
        time.sleep(0.02)
        done, last = delivered(db, started)
    cpu = cpu_seconds(pid) - cpu_before
    return Burst(len(ids), done, last - started, cpu)


def first_starts(db: Path, ids: list[str]) -> dict[str, float]:
    """Return the start time of each message's first recorded attempt."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT message_id, min(at - latency_ms / 1000.0) FROM attempts"
            f" WHERE message_id IN ({','.join('?' * len(ids))}) GROUP BY message_id",
            ids,
        ).fetchall()
    return dict(rows)


def wait_for_starts(db: Path, due: dict[str, float], patience: float) -> list[float]:
    """Wait until every message in ``due`` started (or ``patience`` after the last is due);
    return each one's lateness in ms."""
    deadline = max(due.values()) + patience
    starts: dict[str, float] = {}
    while time.time() < deadline and len(starts) < len(due):
        time.sleep(0.5)
        starts = first_starts(db, list(due))
    return [(starts[m] - due[m]) * 1000 for m in due if m in starts]


def lateness_spread(
    api: httpx.Client, db: Path, url: str, count: int, rate: float, delay: int = 2
) -> tuple[list[float], float]:
    """Publish ``count`` messages one by one at ``rate``/s, each with ``Upstash-Delay``;
    return each one's lateness (ms) and the due rate achieved."""
    due: dict[str, float] = {}
    headers = {"Content-Type": "application/json", "Upstash-Delay": f"{delay}s"}
    started = time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, started + n / rate - time.monotonic()))
        sent = time.time()
        response = api.post(f"/v2/publish/{url}", content=BODY, headers=headers)
        response.raise_for_status()
        due[response.json()["messageId"]] = sent + delay
    achieved = count / max(1e-9, max(due.values()) - min(due.values())) if count > 1 else rate
    return wait_for_starts(db, due, 30), achieved


def lateness_same_second(
    api: httpx.Client, db: Path, url: str, count: int, per_second: int, lead: float
) -> list[float]:
    """Publish ``count`` messages, ``per_second`` of them due at each whole second from
    ``lead`` seconds on (``Upstash-Not-Before``); return each one's lateness in ms."""
    base = math.ceil(time.time() + lead)
    due: dict[str, float] = {}
    for first in range(0, count, BATCH):
        batch = [
            {
                "destination": url,
                "body": BODY,
                "headers": {"Upstash-Not-Before": str(base + n // per_second)},
            }
            for n in range(first, min(count, first + BATCH))
        ]
        response = api.post("/v2/batch", json=batch)
        response.raise_for_status()
        for n, answer in enumerate(response.json(), start=first):
            due[answer["messageId"]] = base + n // per_second
    return wait_for_starts(db, due, 30)


def percentiles(values: list[float]) -> str:
    """Return p50/p99/max of ``values`` as text."""
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, math.ceil(len(ordered) * 0.99) - 1)]
    return f"p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms, max {ordered[-1]:.1f} ms"


def measure(
    api: httpx.Client, db: Path, app_url: str, pid: int, tmp: Path, args: argparse.Namespace
) -> bool:
    """Run the rounds, then the lateness runs; print them; return True if all is well."""
    url = f"{app_url}/api/jobs/noop"
    ratios, cpus, ceilings, lost = [], [], [], 0
    for number in range(1, args.rounds + 1):
        top = ceiling(url, tmp, args.ceiling_seconds)
        result = burst(api, db, url, pid, args.burst)
        lost += result.published - result.delivered
        ratios.append(result.rate / top)
        cpus.append(result.cpu_us)
        ceilings.append(top)
        print(
            f"round {number}: ceiling (wrk) {top:.0f}/s; burst of {result.published}:"
            f" {result.rate:.0f}/s ({result.seconds:.2f} s), {result.delivered} delivered,"
            f" dev-server CPU {result.cpu_us:.0f} µs per delivery"
        )
    print(f"burst/ceiling: {spread(ratios)}")
    print(
        f"dev-server CPU per delivery: median {statistics.median(cpus):.0f} µs"
        f" ({min(cpus):.0f}–{max(cpus):.0f} µs, {len(cpus)} rounds); lost {lost}"
    )
    ok = lost == 0
    late, achieved = lateness_spread(api, db, url, args.delayed, args.due_rate)
    print(
        f"lateness, spread ({achieved:.0f} due/s, one by one with Upstash-Delay):"
        f" {len(late)}/{args.delayed} arrived, {percentiles(late) if late else 'none arrived'}"
    )
    ok = ok and len(late) == args.delayed
    per_second = int(args.due_rate)
    late = lateness_same_second(api, db, url, args.delayed, per_second, args.lead)
    bound = per_second / statistics.median(ceilings) * 1000
    print(
        f"lateness, same second ({per_second} due at each whole second):"
        f" {len(late)}/{args.delayed} arrived, {percentiles(late) if late else 'none arrived'}"
        f" (the last of a second: at least {bound:.0f} ms at the ceiling's rate)"
    )
    return ok and len(late) == args.delayed


def main() -> int:
    """Start the app and the dev server, measure, stop them; 1 if anything was lost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--burst", type=int, default=2000, help="messages per burst")
    parser.add_argument("--ceiling-seconds", type=float, default=3, help="wrk run per round")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--delayed", type=int, default=2000, help="delayed messages each way")
    parser.add_argument("--due-rate", type=float, default=200, help="delayed messages due/s")
    parser.add_argument("--smoke", action="store_true", help="one short round (CI)")
    args = parser.parse_args()
    args.lead = 3.0
    if args.smoke:
        args.rounds, args.burst, args.ceiling_seconds = 1, 100, 1
        args.workers, args.delayed, args.due_rate, args.lead = 1, 20, 20, 0.5
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
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
                print(
                    f"app: gunicorn --config {BARE_CONFIG.name} --workers {args.workers}"
                    " (sync workers); dev server: flask qstash dev (defaults)"
                )
                ok = measure(api, db, app_url, server.pid, tmp, args)
        finally:
            stop(server)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
