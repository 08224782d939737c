"""Throughput of a guarded no-op job vs the same no-op unguarded, side by side.

(a) in-process: the WSGI app called directly, guarded and unguarded in turn each round;
(b) under gunicorn on 127.0.0.1 with wrk as the load generator (skipped if wrk is absent),
    both sides served by the same server, in turn each round, in two configurations:
    * bare: ``--config bench/_gunicorn_bare.py`` (gunicorn's defaults spelled out: sync
      workers, no access log, no preload) with ``--workers N --log-level warning``;
    * deployed: ``--config gunicorn.conf.py`` (access log to stdout, here a file; preload)
      with the same ``--workers N --log-level warning``.

    .venv/bin/python bench/receiver.py [--seconds 12] [--workers 2] [--rounds 3] [--smoke]

Prints each side's median requests/s and the median of the per-round ratios
guarded/unguarded with their min–max (target under gunicorn: >= 0.90). ``--smoke``: one
round, one worker, no warm-up: wrk's shortest run (1 s) per side (CI: the same code path
in seconds).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from receiver_app import APP_URL, CURRENT_KEY, build  # noqa: E402

from app.qstash.signature import sign  # noqa: E402
from bench._load import post_script, wrk  # noqa: E402
from bench._stats import side_by_side, spread  # noqa: E402

BODY = b'{"webhookId":"wh_123","eventType":"order.created","payload":{"id":42}}'
BARE_CONFIG = HERE / "_gunicorn_bare.py"
DEPLOYED_CONFIG = ROOT / "gunicorn.conf.py"
Rounds = list[tuple[float, float]]  # (guarded, unguarded) requests/s of each round


def environ(path: str, token: str | None) -> dict[str, Any]:
    env = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(BODY),
        "wsgi.errors": sys.stderr,
        "CONTENT_LENGTH": str(len(BODY)),
        "CONTENT_TYPE": "application/json",
        "HTTP_UPSTASH_MESSAGE_ID": "msg_bench",
        "HTTP_UPSTASH_RETRIED": "0",
    }
    if token:
        env["HTTP_UPSTASH_SIGNATURE"] = token
    return env


def in_process(seconds: float, rounds: int) -> Rounds:
    """Return requests/s (guarded, unguarded) of each round, calling the WSGI app directly."""
    app = build()
    token = sign(BODY, url=APP_URL + "/api/jobs/noop", key=CURRENT_KEY)
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    def run(path: str) -> float:
        statuses.clear()
        count, deadline = 0, time.perf_counter() + seconds / (2 * rounds)
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            for _ in range(50):
                body = app(environ(path, token), start_response)
                b"".join(body)
            count += 50
        failed = {status for status in statuses if not status.startswith("200")}
        if failed:
            raise SystemExit(f"{path} answered {failed}")
        return count / (time.perf_counter() - started)

    return side_by_side(rounds, lambda: run("/api/jobs/noop"), lambda: run("/plain/noop"))


def under_gunicorn(
    seconds: float, workers: int, rounds: int, config: Path, *, warm_up: bool = True
) -> Rounds:
    """Return requests/s (guarded, unguarded) of each round under gunicorn ``--config``."""
    from tests.servers import gunicorn  # noqa: PLC0415

    token = sign(BODY, url=APP_URL + "/api/jobs/noop", key=CURRENT_KEY)
    each = seconds / (2 * rounds)
    with tempfile.TemporaryDirectory() as tmp:
        # Both sides get the identical request, signature header included, so the only
        # difference measured is the guard.
        headers = {
            "Content-Type": "application/json",
            "Upstash-Message-Id": "msg_bench",
            "Upstash-Retried": "0",
            "Upstash-Signature": token,
        }
        script = post_script(Path(tmp) / "request.lua", BODY, headers)
        env = {"PYTHONPATH": f"{ROOT}:{HERE}", "GUNICORN_CMD_ARGS": ""}
        args = ("--config", str(config), "--log-level", "warning")
        with gunicorn(
            Path(tmp), env, app="receiver_app:app", workers=workers, args=args, config=False
        ) as server:
            guarded, plain = server.url + "/api/jobs/noop", server.url + "/plain/noop"
            if warm_up:
                wrk(guarded, script, 1)
            measured = side_by_side(
                rounds, lambda: wrk(guarded, script, each), lambda: wrk(plain, script, each)
            )
            # The settings in force, checked: only the deployed configuration logs access.
            if ('"POST /plain/noop' in server.output()) != (config == DEPLOYED_CONFIG):
                raise SystemExit(
                    f"gunicorn did not run with {config.name}:\n{server.output()[-2000:]}"
                )
            return measured


def report(label: str, rounds: Rounds) -> None:
    """Print each side's median rate and the median of the per-round ratios."""
    guarded = statistics.median(g for g, _ in rounds)
    plain = statistics.median(p for _, p in rounds)
    print(
        f"{label:<34} guarded {guarded:8.0f} req/s   unguarded {plain:8.0f} req/s"
        f"   guarded/unguarded {spread([g / p for g, p in rounds])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="total per mode")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="one short round (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.workers, args.rounds = 1.0, 1, 1
    report("(a) in-process WSGI", in_process(args.seconds, args.rounds))
    if shutil.which("wrk") is None:
        print("(b) gunicorn: skipped, wrk not installed (apt-get install wrk)")
        return
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    for label, config in (("bare", BARE_CONFIG), ("deployed", DEPLOYED_CONFIG)):
        rounds = under_gunicorn(
            args.seconds, args.workers, args.rounds, config, warm_up=not args.smoke
        )
        report(f"(b) gunicorn {label} -w {args.workers} + wrk", rounds)


if __name__ == "__main__":
    main()
