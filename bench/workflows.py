"""Workflow step overhead: ours vs the official upstash-workflow SDK vs chained plain jobs.

    .venv/bin/python bench/workflows.py [--rounds 5] [--steps 50 200] [--workers 2] [--smoke]

One run is ``n`` steps, each ``work(i, previous)`` (``bench/_workflow_jobs.py``): it checks
that the previous step's result arrived and returns about 1 KB of JSON. Four sides run
it through the same dev server (``flask qstash dev``, its own process, real time), each
app under gunicorn ``--config bench/_gunicorn_bare.py --workers N`` (sync workers):

- ``ours``: the ``bench-steps`` workflow (``app.workflows``), default
  ``WORKFLOW_STEP_BUDGET`` (new steps run inline in one delivery for up to 2 s);
- ``ours, budget 0``: the same with ``WORKFLOW_STEP_BUDGET=0``, one step per delivery
  (each delivery replays the run from the store, runs one step, publishes the next);
- ``peer``: the official ``upstash-workflow`` SDK (Flask ``Serve``), one step per delivery,
  each delivery carrying the input and every earlier result (the dev server builds it as
  QStash does);
- ``chained``: ``n`` plain jobs, each doing the step and publishing the next with its
  result (``bench-chain``), in the same app as ``ours``.

Both apps of ours run as deployed for the store: SQLite, delivery log and duplicate guard
on (workflows need the store); metrics off. The peer is a bare Flask app with the SDK.
Every side declares ``retries=0`` (a failing step ends the benchmark instead of waiting
for backoffs); every worker first runs a 2-step run of each side, untimed.

A run is timed from the publish of its start message (the same ``httpx`` client for all
sides) to the moment the code after its last step has run (it writes a file the benchmark
polls every millisecond); the run is then checked (ours: the store says completed with
``n`` steps; peer: the dev server's workflow log says ``RUN_SUCCESS``), untimed. Bytes
received: the request bodies (``Content-Length``) every request to the app carried,
counted by the same WSGI middleware on all sides (``bench/_workflow_apps.py``), from the
start message to the run's end. Each round runs every side once per ``n``, the order
rotating round by round; printed per ``n``: each side's median time (min–max), bytes and
requests per run, the median of per-round time ratios (ours/chained, ours/peer) with
min–max and the median bytes ratio; then how bytes per run grow from the fewest steps to
the most (linear: by the ratio of the step counts).
Targets (issue 16): bytes per run linear in steps; a 50-step run ≤ 1.2× the chained
jobs' time. ``--smoke``: one round of 5 steps (CI: the same code path in seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import DEV_IDENTITY  # noqa: E402
from bench._stats import spread  # noqa: E402
from bench._workflow_apps import received  # noqa: E402
from tests.devserver.processes import start_dev_server  # noqa: E402
from tests.servers import free_port, gunicorn, stop  # noqa: E402

TOKEN = {"Authorization": f"Bearer {DEV_IDENTITY['QSTASH_TOKEN']}"}
BARE_CONFIG = Path(__file__).resolve().parent / "_gunicorn_bare.py"
PEER = f"upstash-workflow {version('upstash-workflow')}"
CHAINED = "chained jobs"


@dataclass
class Run:
    """One run's outcome on one side."""

    seconds: float
    bytes: int
    requests: int


@dataclass
class Side:
    """A way to run ``n`` steps: where its start message goes and how it is checked."""

    name: str
    url: str  # the start message's destination, before the query
    query: Callable[[str], str]  # the start URL's query for a run tag
    body: Callable[[int, str], dict[str, object]]
    check: Callable[[str, int], None]  # untimed: (run id on that side, n)
    counters: Path


def wait_for(path: Path, timeout: float) -> None:
    """Poll every millisecond until ``path`` exists; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path.name}: the run did not finish in {timeout:.0f} s")
        time.sleep(0.001)


def run_once(api: httpx.Client, side: Side, n: int, state: Path) -> Run:
    """Start one run of ``n`` steps on ``side``, wait for its end, check it; measure it."""
    label = "".join(c if c.isalnum() else "-" for c in side.name)
    tag = f"{label}-{n}-{uuid.uuid4().hex[:12]}"
    before = received(side.counters)
    content = json.dumps(side.body(n, tag)).encode()
    headers = {"Content-Type": "application/json"}
    started = time.perf_counter()
    answer = api.post(f"/v2/publish/{side.url}{side.query(tag)}", content=content, headers=headers)
    answer.raise_for_status()
    marker = state / f"{tag}.done"
    wait_for(marker, 60 + 0.2 * n)
    elapsed = time.perf_counter() - started
    side.check(marker.read_text(), n)
    after = received(side.counters)
    return Run(elapsed, after[0] - before[0], after[1] - before[1])


def store_check(store: Path) -> Callable[[str, int], None]:
    """Wait until the store says run ``run_id`` completed; fail unless it has ``n`` steps."""

    def check(run_id: str, n: int) -> None:
        deadline = time.monotonic() + 30
        while True:
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
                row = conn.execute(
                    "SELECT state, position FROM workflow_runs WHERE id = ?", (run_id,)
                ).fetchone()
            if row is not None and row[0] == "completed":
                if row[1] != n:
                    raise SystemExit(f"run {run_id} completed with {row[1]} steps, not {n}")
                return
            if row is not None and row[0] in ("failed", "cancelled") or time.monotonic() > deadline:
                raise SystemExit(f"run {run_id} ended as {row}")
            time.sleep(0.002)

    return check


def peer_check(api: httpx.Client) -> Callable[[str, int], None]:
    """Wait until the dev server's workflow log says run ``run_id`` succeeded."""

    def check(run_id: str, n: int) -> None:
        deadline = time.monotonic() + 30
        while True:
            logs = api.get("/v2/workflows/logs", params={"workflowRunId": run_id}).json()
            states = [run["workflowState"] for run in logs["runs"]]
            if states == ["RUN_SUCCESS"]:
                return
            if time.monotonic() > deadline or "RUN_FAILED" in states:
                raise SystemExit(f"peer run {run_id}: {states}")
            time.sleep(0.005)

    return check


@contextmanager
def sides(tmp: Path, dev_url: str, workers: int, api: httpx.Client) -> Iterator[list[Side]]:
    """Start the three apps under gunicorn; yield the four sides."""
    gunicorn_args = ("--config", str(BARE_CONFIG), "--log-level", "warning")
    common = {
        "QSTASH_DEV": "1",
        "QSTASH_URL": dev_url,
        "JOBS_PACKAGES": "bench._workflow_jobs",
        "METRICS": "0",
        "GUNICORN_CMD_ARGS": "",
        "BENCH_DONE_DIR": str(tmp / "state"),
    }
    budgets = {"ours": "2", "ours, budget 0": "0"}
    with ExitStack() as stack:
        found: list[Side] = []
        for name, budget in [*budgets.items(), (PEER, "")]:
            port = free_port()
            counters = tmp / f"counters-{port}"
            counters.mkdir()
            env = {
                **common,
                "APP_URL": f"http://127.0.0.1:{port}",
                "WORKFLOW_STEP_BUDGET": budget or "2",
                "BENCH_RECEIVED_DIR": str(counters),
            }
            app = "bench._workflow_apps:peer()" if name == PEER else "bench._workflow_apps:ours()"
            server = stack.enter_context(
                gunicorn(
                    tmp, env, app=app, port=port, workers=workers, args=gunicorn_args, config=False
                )
            )
            store = tmp / f"store-{port}.sqlite3"
            if name == PEER:
                found.append(
                    Side(
                        name,
                        server.url + "/bench-steps",
                        lambda tag: "",
                        lambda n, tag: {"n": n, "tag": tag},
                        peer_check(api),
                        counters,
                    )
                )
                continue
            found.append(
                Side(
                    name,
                    server.url + "/api/jobs/bench-steps",
                    lambda tag: f"?run={tag}",
                    lambda n, tag: {"n": n, "tag": tag},
                    store_check(store),
                    counters,
                )
            )
            if name == "ours":
                found.append(
                    Side(
                        CHAINED,
                        server.url + "/api/jobs/bench-chain",
                        lambda tag: "",
                        lambda n, tag: {"n": n, "tag": tag, "i": 0, "previous": None},
                        lambda run_id, n: None,
                        counters,
                    )
                )
        yield found


def size(count: float) -> str:
    """Return ``count`` bytes as B, KB or MB text."""
    if count >= 1e6:
        return f"{count / 1e6:.2f} MB"
    return f"{count / 1e3:.1f} KB" if count >= 1e3 else f"{count:.0f} B"


def report(n: int, runs: dict[str, list[Run]]) -> None:
    """Print each side's medians and the per-round ratios for ``n`` steps."""
    count = len(next(iter(runs.values())))
    print(f"{n} steps, {count} round{'s' if count > 1 else ''}:")
    for name, measured in runs.items():
        times = [run.seconds for run in measured]
        received = statistics.median(run.bytes for run in measured)
        requests = statistics.median(run.requests for run in measured)
        print(
            f"  {name:22} {statistics.median(times):7.3f} s per run"
            f" ({min(times):.3f}–{max(times):.3f} s), {size(received)} received"
            f" in {requests:.0f} requests"
        )
    for ours in ("ours", "ours, budget 0"):
        for other in (CHAINED, PEER):
            pairs = list(zip(runs[ours], runs[other], strict=True))
            time_ratio = spread([a.seconds / b.seconds for a, b in pairs])
            # Bytes hardly vary between rounds and differ by orders of magnitude.
            bytes_ratio = statistics.median(a.bytes / max(1, b.bytes) for a, b in pairs)
            print(f"  {ours}/{other}: time {time_ratio}; bytes {bytes_ratio:.2g}×")


def growth(results: dict[int, dict[str, list[Run]]]) -> None:
    """Print how each side's bytes per run grow from the fewest steps to the most
    (linear: by the ratio of the step counts; quadratic: by its square)."""
    few, many = min(results), max(results)
    if few == many:
        return

    def median_bytes(n: int, name: str) -> float:
        return statistics.median(run.bytes for run in results[n][name])

    grew = ", ".join(
        f"{name} ×{median_bytes(many, name) / max(1, median_bytes(few, name)):.1f}"
        for name in results[few]
    )
    print(f"bytes per run, {many} vs {few} steps (linear ×{many / few:g}): {grew}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers per app")
    parser.add_argument("--smoke", action="store_true", help="one round of 5 steps (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.steps = 1, [5]
    with tempfile.TemporaryDirectory(prefix="bench-workflows-") as tmp_name:
        tmp = Path(tmp_name)
        state = tmp / "state"
        state.mkdir()
        port = free_port()
        dev_url = f"http://127.0.0.1:{port}"
        server = start_dev_server(port, tmp / "qstash.db", tmp / "dev.log")
        try:
            with (
                httpx.Client(base_url=dev_url, headers=TOKEN, timeout=30) as api,
                sides(tmp, dev_url, args.workers, api) as found,
            ):
                print(
                    f"dev server: flask qstash dev; apps: gunicorn --config {BARE_CONFIG.name}"
                    f" --workers {args.workers} (sync); ~1 KB per step; load average (1 min)"
                    f" {os.getloadavg()[0]:.1f}"
                )
                for side in found:  # warm up every worker: imports, pools, the store
                    for _ in range(args.workers):
                        run_once(api, side, 2, state)
                results: dict[int, dict[str, list[Run]]] = {
                    n: {side.name: [] for side in found} for n in args.steps
                }
                for number in range(args.rounds):
                    for n in args.steps:
                        order = found[number % len(found) :] + found[: number % len(found)]
                        for side in order:
                            results[n][side.name].append(run_once(api, side, n, state))
                        times = ", ".join(
                            f"{name} {runs[-1].seconds:.3f} s" for name, runs in results[n].items()
                        )
                        print(f"round {number + 1}, {n} steps: {times}", flush=True)
                for n in args.steps:
                    report(n, results[n])
                growth(results)
                print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}")
        except SystemExit as exc:
            if isinstance(exc.code, str):  # a run failed: show what the servers said
                for log in sorted(tmp.glob("*.log")):
                    tail = log.read_text(errors="replace").splitlines()[-20:]
                    print(f"--- {log.name}, last lines:", *tail, sep="\n", file=sys.stderr)
            raise
        finally:
            stop(server)


if __name__ == "__main__":
    main()
