"""Throughput of a guarded no-op job vs the same no-op unguarded, side by side.

(a) in-process: the WSGI app called directly, alternating guarded and unguarded rounds;
(b) under gunicorn on 127.0.0.1 with wrk as the load generator (skipped if wrk is absent),
    once bare (no access log) and once with the project's gunicorn.conf.py, as deployed.

    .venv/bin/python bench/receiver.py [--seconds 5] [--workers 2] [--rounds 3]

Prints requests/s of each and the ratio guarded/unguarded (target under gunicorn: >= 0.90).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
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
from bench._load import wrk  # noqa: E402

BODY = b'{"webhookId":"wh_123","eventType":"order.created","payload":{"id":42}}'


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


def in_process(seconds: float, rounds: int) -> tuple[float, float]:
    """Return requests/s (guarded, unguarded) calling the WSGI app directly."""
    app = build()
    token = sign(BODY, url=APP_URL + "/api/jobs/noop", key=CURRENT_KEY)
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    def run(path: str, signed: bool) -> float:
        count, deadline = 0, time.perf_counter() + seconds / (2 * rounds)
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            for _ in range(50):
                body = app(environ(path, token if signed else None), start_response)
                b"".join(body)
            count += 50
        assert statuses[-1].startswith("200"), statuses[-1]
        return count / (time.perf_counter() - started)

    guarded, plain = [], []
    for _ in range(rounds):
        guarded.append(run("/api/jobs/noop", True))
        plain.append(run("/plain/noop", True))
    return sorted(guarded)[rounds // 2], sorted(plain)[rounds // 2]


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Upstash-Message-Id"] = "msg_bench"
wrk.headers["Upstash-Retried"] = "0"
{signature}
"""


def under_gunicorn(
    seconds: float, workers: int, rounds: int, production: bool
) -> tuple[float, float]:
    """Return requests/s (guarded, unguarded) under gunicorn, alternating rounds.

    ``production`` runs gunicorn with the project's gunicorn.conf.py (access log on, as
    deployed; the log goes to a file here); otherwise bare gunicorn without access log.
    """
    from tests.servers import gunicorn  # noqa: PLC0415

    token = sign(BODY, url=APP_URL + "/api/jobs/noop", key=CURRENT_KEY)
    with tempfile.TemporaryDirectory() as tmp:
        signed, plain = Path(tmp) / "signed.lua", Path(tmp) / "plain.lua"
        body = BODY.decode()
        signed.write_text(
            WRK_SCRIPT.format(body=body, signature=f'wrk.headers["Upstash-Signature"] = "{token}"')
        )
        # The unguarded twin gets the identical request, signature header included, so
        # the only difference measured is the guard.
        plain.write_text(signed.read_text())
        env = {"PYTHONPATH": f"{ROOT}:{HERE}"}
        options = {"app": "receiver_app:app", "workers": workers, "config": production}
        with gunicorn(Path(tmp), env, args=("--log-level", "warning"), **options) as server:
            wrk(server.url + "/api/jobs/noop", signed, 1)  # warm-up
            guarded, unguarded = [], []
            for _ in range(rounds):
                guarded.append(wrk(server.url + "/api/jobs/noop", signed, seconds / (2 * rounds)))
                unguarded.append(wrk(server.url + "/plain/noop", plain, seconds / (2 * rounds)))
    return sorted(guarded)[rounds // 2], sorted(unguarded)[rounds // 2]


def report(label: str, guarded: float, plain: float) -> None:
    print(
        f"{label:<28} guarded {guarded:10.0f} req/s   unguarded {plain:10.0f} req/s"
        f"   ratio {guarded / plain:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="total per mode")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    report("(a) in-process WSGI", *in_process(args.seconds, args.rounds))
    if shutil.which("wrk") is None:
        print("(b) gunicorn: skipped, wrk not installed (apt-get install wrk)")
        return
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    for production in (False, True):
        label = "gunicorn.conf.py" if production else "bare gunicorn"
        report(
            f"(b) {label} -w {args.workers} + wrk",
            *under_gunicorn(args.seconds, args.workers, args.rounds, production),
        )


if __name__ == "__main__":
    main()
