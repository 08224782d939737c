"""Memory per gunicorn worker: the project's app as deployed vs a bare Flask app, side by side.

Each round starts gunicorn twice with sync workers and ``--config`` passed explicitly:

* ``ours``: ``wsgi:app`` with the project's gunicorn.conf.py (preload, access log, metrics),
  every job of ``jobs/``, SQLite store, send-email through Resend's SDK to a local fake
  (``--outbox``: to ``.eml`` files, Resend not configured);
* ``bare``: ``bench/bare_flask.py`` with ``bench/_gunicorn_bare.py`` (gunicorn's defaults:
  no preload, no access log), the app a user would write without the framework.

and reads each worker's memory from ``/proc/PID/smaps_rollup`` at three points: *idle*
(booted, nothing served but one readiness probe), *after N* requests (ours: signed
send-email deliveries; bare: the same JSON posted to a route that answers it), and
*after images* (20 process-image deliveries, half a 12 MP JPEG, half a 6 MP PNG; bare: the
same Pillow decode, resize and WebP encodes). The requests come from as many client
threads as there are workers, so every worker serves; the worst (largest) worker counts.

Three numbers per worker, because a preloading master shares its pages with its workers:

* ``RSS`` counts every page the worker maps, shared ones whole: what ``ps``/``top`` show,
  and what the issue's first figures (29 / 77 / 110 MiB) were.
* ``PSS`` divides each shared page among the processes sharing it: the sum over master
  and workers is the memory the deployment really takes. **The targets are on PSS**
  (idle worker ≤ 45 MiB, after images ≤ idle + 10 MiB), with the stated number of workers
  (the fewer, the larger each one's share), because a part that ``preload_app`` shares is
  paid once, not once per worker, and only PSS says so; RSS is printed beside it. A shared
  library's pages are also shared with other processes of the machine that map it, which
  lowers PSS a little when they run.
* ``USS`` is the worker's private memory: what one more worker adds.

Pages shared at fork become private as a worker runs (CPython writes reference counts
into the objects it uses), so *after N* is the steady state; the last line separates what
the images themselves left behind (*after N* to *after images*).

Printed: the median over rounds of each number, per phase the median of per-round ratios
ours/bare with min–max, and the targets. ``--smoke``: 1 round, 20 deliveries, 2 images
(CI: the same code path in seconds).

Run: ``.venv/bin/python bench/worker_memory.py [--rounds 3] [--workers 2] [--deliveries
2000] [--images 20] [--outbox] [--smoke]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.qstash.signature import sign  # noqa: E402 - after the path is set
from bench._receiver import receiver  # noqa: E402
from bench._stats import spread  # noqa: E402
from tests.servers import GUNICORN, free_port, stop, wait_until_up  # noqa: E402

CURRENT_KEY = "sig_bench_current_0123456789abcdef"
NEXT_KEY = "sig_bench_next_0123456789abcdefghi"
MIB = 1024 * 1024
PHASES = ("idle", "after N", "after images")
METRICS = ("rss", "pss", "uss")
TARGET_IDLE_PSS = 45.0
TARGET_IMAGE_GROWTH = 10.0
#: gunicorn's defaults spelled out, so that no ./gunicorn.conf.py is read in their place.
BARE_CONFIG = ROOT / "bench" / "_gunicorn_bare.py"
EMAIL = {
    "to": "ada@example.com",
    "template": "welcome",
    "data": {"name": "Ada", "loginUrl": "https://app.example.com/login"},
}
IMAGES = {"photo.jpg": (4000, 3000, "JPEG"), "photo.png": (3000, 2000, "PNG")}

SIDES = ("bare", "ours")
Sample = dict[str, float]  # metric → MiB, of the largest worker
Request = tuple[str, bytes, dict[str, str]]  # url, body, headers


def worker_memory(pid: int) -> Sample:
    """Return RSS, PSS and USS of ``pid`` in MiB, from /proc/PID/smaps_rollup."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0]) * 1024
    uss = fields["Private_Clean"] + fields["Private_Dirty"]
    return {"rss": fields["Rss"] / MIB, "pss": fields["Pss"] / MIB, "uss": uss / MIB}


def workers_of(master: int) -> list[int]:
    """Return the pids of ``master``'s children (gunicorn's workers)."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def settled(master: int, workers: int, timeout: float = 30) -> list[int]:
    """Wait until ``workers`` workers run and their RSS stops moving; return their pids."""
    deadline = time.monotonic() + timeout
    last: list[float] = []
    while time.monotonic() < deadline:
        pids = workers_of(master)
        now = [worker_memory(pid)["rss"] for pid in pids]
        if len(pids) == workers and len(now) == len(last):
            if all(abs(a - b) < 0.05 for a, b in zip(now, last, strict=True)):
                return pids
        last = now
        time.sleep(0.3)
    raise RuntimeError(f"{workers} workers did not settle in {timeout}s")


def largest(pids: list[int]) -> Sample:
    """Return each metric of the worker holding the most (by PSS)."""
    return max((worker_memory(pid) for pid in pids), key=lambda sample: sample["pss"])


@contextmanager
def gunicorn(
    app: str, config: Path, workers: int, env: dict[str, str], folder: Path, ready: str
) -> Iterator[tuple[str, int]]:
    """Run ``gunicorn app --config config`` on a free loopback port; yield (url, master pid).

    ``env`` may name the URL as ``{url}`` (APP_URL must be known before the app starts).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / f"gunicorn-{port}.log"
    command = [GUNICORN, app, "--config", str(config), "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", str(workers), "--control-socket", str(folder / f"{port}.ctl")]
    filled = {name: value.format(url=url) for name, value in env.items()}
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **filled}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, env=full_env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        wait_until_up(url + ready, process, log, timeout=60)
        yield url, process.pid
    finally:
        stop(process, timeout=15)


def post_all(requests: list[Request], threads: int) -> None:
    """POST every (url, body, headers) from ``threads`` clients; fail on any non-200."""

    def send(item: Request) -> None:
        url, body, headers = item
        response = httpx.post(url, content=body, headers=headers, timeout=60)
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, requests))


def delivery(base: str, job: str, payload: object) -> Request:
    """Return a signed QStash delivery of ``payload`` to ``job`` (a fresh message id)."""
    body = json.dumps(payload).encode()
    path = f"/api/jobs/{job}"
    headers = {
        "Content-Type": "application/json",
        "Upstash-Signature": sign(body, url=base + path, key=CURRENT_KEY),
        "Upstash-Message-Id": f"msg_{uuid.uuid4().hex}",
        "Upstash-Retried": "0",
    }
    return base + path, body, headers


def make_images(folder: Path) -> None:
    """Write the benchmark's photo-like inputs into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (width, height, image_format) in IMAGES.items():
        noise = Image.effect_noise((width // 8, height // 8), 60).convert("RGB")
        buffer = io.BytesIO()
        noise.resize((width, height), Image.Resampling.BICUBIC).save(buffer, image_format)
        (folder / name).write_bytes(buffer.getvalue())


def requests_of(
    side: str, url: str, storage: Path, args: argparse.Namespace
) -> tuple[list[Request], list[Request]]:
    """Return (the N deliveries, the image jobs) one side serves."""
    images = [name for name in IMAGES for _ in range(args.images // len(IMAGES))]
    if side == "ours":
        operations = ["resize", "webp", "thumbnail"]
        return (
            [delivery(url, "send-email", EMAIL) for _ in range(args.deliveries)],
            [
                delivery(
                    url,
                    "process-image",
                    {"fileKey": f"in/{image}", "userId": "u1", "operations": operations},
                )
                for image in images
            ],
        )
    plain = {"Content-Type": "application/json"}
    return (
        [(url + "/deliver", json.dumps(EMAIL).encode(), plain)] * args.deliveries,
        [
            (url + "/image", json.dumps({"path": str(storage / "in" / image)}).encode(), plain)
            for image in images
        ],
    )


def run_side(
    side: str, args: argparse.Namespace, folder: Path, resend_url: str
) -> dict[str, Sample]:
    """Start one side, drive it through the three phases; return each phase's sample."""
    storage = folder.parent / "storage"  # the inputs, shared by the rounds
    if side == "ours":
        config, app, ready = ROOT / "gunicorn.conf.py", "wsgi:app", "/healthz"
        env = {
            "QSTASH_CURRENT_SIGNING_KEY": CURRENT_KEY,
            "QSTASH_NEXT_SIGNING_KEY": NEXT_KEY,
            "APP_URL": "{url}",
            "DATABASE_URL": f"sqlite:///{folder / 'store.sqlite3'}",
            "STORAGE_ROOT": str(storage),
            "LOG_LEVEL": "warning",
        }
        if args.outbox:
            env["EMAIL_OUTBOX"] = str(folder / "outbox")
        else:
            env.update(RESEND_API_KEY="re_bench", RESEND_API_URL=resend_url)
    else:
        config, app, ready = BARE_CONFIG, "bench.bare_flask:app", "/"
        env = {}
    with gunicorn(app, config, args.workers, env, folder, ready) as (url, master):
        deliveries, jobs = requests_of(side, url, storage, args)
        samples = {"idle": largest(settled(master, args.workers))}
        post_all(deliveries, args.workers)
        samples["after N"] = largest(settled(master, args.workers))
        post_all(jobs, args.workers)
        samples["after images"] = largest(settled(master, args.workers))
    return samples


def report(rounds: list[dict[str, dict[str, Sample]]], workers: int) -> None:
    """Print medians over rounds, per-round ratios ours/bare, and the targets."""
    print(f"sync workers: {workers}; the largest worker; MiB, median of {len(rounds)} rounds")
    print(f"{'':14}" + "".join(f"{side + ' ' + m.upper():>11}" for side in SIDES for m in METRICS))
    for phase in PHASES:
        cells = [
            statistics.median(r[side][phase][metric] for r in rounds)
            for side in SIDES
            for metric in METRICS
        ]
        print(f"{phase:14}" + "".join(f"{cell:11.1f}" for cell in cells))
    for metric in ("rss", "pss"):
        for phase in PHASES:
            ratios = [r["ours"][phase][metric] / r["bare"][phase][metric] for r in rounds]
            print(f"ours/bare {metric.upper()} {phase:13} {spread(ratios)}")

    def rise(start: str, end: str) -> str:
        pss, rss = (
            statistics.median(r["ours"][end][m] - r["ours"][start][m] for r in rounds)
            for m in ("pss", "rss")
        )
        return f"PSS +{pss:.1f}, RSS +{rss:.1f}"

    idle, served = (statistics.median(r["ours"][p]["pss"] for r in rounds) for p in PHASES[:2])
    print(f"target: idle PSS <= {TARGET_IDLE_PSS:.0f} MiB: {idle:.1f} (after N: {served:.1f})")
    print(
        f"target: after images <= idle + {TARGET_IMAGE_GROWTH:.0f} MiB:"
        f" {rise('idle', 'after images')}"
    )
    print(
        f"        of which the images (after N -> after images): {rise('after N', 'after images')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--outbox", action="store_true", help="send-email writes .eml files")
    parser.add_argument("--smoke", action="store_true", help="1 round, 20 deliveries, 2 images")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.deliveries, args.images = 1, 20, 2
    rounds = []
    with tempfile.TemporaryDirectory() as tmp, receiver() as resend_url:
        make_images(Path(tmp) / "storage" / "in")
        for number in range(args.rounds):
            folder = Path(tmp) / f"round-{number}"
            folder.mkdir()
            order = SIDES if number % 2 == 0 else SIDES[::-1]  # the load drifts: alternate
            rounds.append({side: run_side(side, args, folder, resend_url) for side in order})
    report(rounds, args.workers)


if __name__ == "__main__":
    main()
