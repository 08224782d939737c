"""deliver-webhook against a bare Flask route making the same signed POST, side by side.

Both sides receive the same QStash delivery (same body and headers, QStash's signature
included) as a WSGI environ built before the clock starts, as gunicorn would hand it over,
and make one HTTP hop: a POST of the same Standard Webhooks event (body and headers made
by the same ``jobs.webhook.signed_event``) through the same pooled client
(``webhook_client(app)``: httpx with the SSRF-checked transport) to the same local receiver,
which runs in its own process and answers at once, or after ``--receiver-ms`` (a receiver
that does some work).

* ``ours``: ``/api/jobs/deliver-webhook`` of ``create_app()`` with every job of ``jobs/``:
  QStash signature verification, the schema, the handler (total deadline, capped read,
  redaction), the outcome; in the ``on`` configuration also the delivery log and duplicate
  guard (SQLite in a temporary folder) and metrics (prometheus-client's multiprocess mode,
  as ``gunicorn.conf.py`` sets it up).
* ``bare``: a Flask app with that one route, what a user would write without the
  framework: ``request.get_json()``, the event built and signed (``signed_event``),
  ``client.post``, a JSON answer. No verification, no validation, no deadline or read cap.

A round gives each side ``--requests`` deliveries, switching sides every ``--chunk`` of
them (who goes first alternates too: the shared machine's load drifts), and yields the
ratio ours/bare of deliveries per second; the median of those ratios is reported with its
min–max. Target >= 0.85 in both configurations. ``--smoke``: one round of six deliveries
per side and configuration (CI: the same code path in seconds).

Run: ``.venv/bin/python bench/webhook.py [--rounds 9] [--requests 300] [--chunk 50]
[--operations off|on|both] [--receiver-ms 0] [--smoke]``
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

# As deployed (gunicorn.conf.py): metrics in prometheus-client's multiprocess mode, which
# prometheus-client decides when first imported.
_METRICS_DIR = tempfile.TemporaryDirectory(prefix="bench-webhook-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _METRICS_DIR.name

import httpx  # noqa: E402
from flask import Flask, request  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import create_app  # noqa: E402
from app.jobs import URL_PREFIX  # noqa: E402
from app.store import get_store  # noqa: E402
from app.testing import delivery_headers, encode_payload  # noqa: E402
from bench._receiver import receiver  # noqa: E402
from bench._stats import spread  # noqa: E402
from jobs.webhook import signed_event, webhook_client  # noqa: E402

PATH = f"{URL_PREFIX}/deliver-webhook"
SECRET = "whsec_" + base64.b64encode(b"bench-secret-0123456789abcdef012").decode()
CONFIG = {
    "QSTASH_CURRENT_SIGNING_KEY": "sig_bench_current_0123456789abcdef",
    "QSTASH_NEXT_SIGNING_KEY": "sig_bench_next_0123456789abcdefghi",
    "APP_URL": "https://bench.example.com",
    "WEBHOOK_ALLOWED_NETWORKS": ["127.0.0.1/32"],
}
WSGIApp = Callable[..., Any]


def bare_app(client: httpx.Client) -> Flask:
    """Return a Flask app whose one route signs and POSTs the event, nothing more."""
    bare = Flask("bare")

    @bare.post(PATH)
    def deliver() -> tuple[dict[str, Any], int]:
        payload = request.get_json()
        webhook_id = request.headers["Upstash-Message-Id"]
        body, headers = signed_event(
            payload["secret"], webhook_id, payload["eventType"], payload["payload"]
        )
        response = client.post(payload["targetUrl"], content=body, headers=headers)
        answer = {"webhookId": payload["webhookId"], "targetStatus": response.status_code}
        return answer, 200 if response.is_success else 503

    return bare


def environs(ours: Flask, target: str, count: int) -> list[dict[str, Any]]:
    """Return ``count`` signed deliveries (random message ids, as QStash's are) as environs."""
    built = []
    for i in range(count):
        payload = {
            "webhookId": f"wh_{i}",
            "eventType": "invoice.paid",
            "payload": {"invoiceId": f"in_{i}", "amount": 4200},
            "targetUrl": target + "/hook",
            "secret": SECRET,
        }
        body = encode_payload(payload)
        headers = delivery_headers(ours, PATH, body, message_id=f"msg_{uuid.uuid4().hex}")
        built.append(EnvironBuilder(path=PATH, method="POST", data=body, headers=headers))
    return [builder.get_environ() for builder in built]


def seconds(app: WSGIApp, batch: list[dict[str, Any]], then: Callable[[], object]) -> float:
    """Return how long ``app`` takes to answer ``batch``, ``then()`` included; fail on any
    answer but 200."""
    statuses: list[str] = []

    def start_response(status: str, headers: object, exc_info: object = None) -> None:
        statuses.append(status)

    started = time.perf_counter()
    for environ in batch:
        b"".join(app(environ, start_response))
    then()
    elapsed = time.perf_counter() - started
    failed = {status for status in statuses if not status.startswith("200")}
    if failed:
        raise SystemExit(f"deliveries answered {failed}")
    return elapsed


def compare(
    operations: bool, target: str, rounds: int, requests: int, chunk: int
) -> list[tuple[float, float]]:
    """Return (ours, bare) deliveries/s of each round, log+guard+metrics ``operations``.

    A round alternates the sides every ``chunk`` deliveries (who goes first alternates
    too), so both see the same moments of the shared machine's load.
    """
    with tempfile.TemporaryDirectory() as folder:
        ours = create_app(
            {
                **CONFIG,
                "DATABASE_URL": f"sqlite:///{folder}/store.sqlite3",
                "DELIVERY_LOG": operations,
                "DUPLICATE_GUARD": operations,
                "METRICS": operations,
            }
        )
        store = get_store(ours)
        # The log's rows and the guard's completions are written in the background, later:
        # each chunk of ours ends once they are written, so ours pays for them.
        sides: dict[str, tuple[WSGIApp, Callable[[], object]]] = {
            "ours": (ours, store.flush if store else lambda: None),
            "bare": (bare_app(webhook_client(ours)), lambda: None),
        }
        try:
            for app, then in sides.values():  # warm up: imports, the pool, the store
                seconds(app, environs(ours, target, 3), then)
            results = []
            for _ in range(rounds):
                batches = {name: environs(ours, target, requests) for name in sides}
                elapsed = dict.fromkeys(sides, 0.0)
                for first in range(0, requests, chunk):
                    order = ["ours", "bare"] if first // chunk % 2 == 0 else ["bare", "ours"]
                    for name in order:
                        app, then = sides[name]
                        elapsed[name] += seconds(app, batches[name][first : first + chunk], then)
                results.append((requests / elapsed["ours"], requests / elapsed["bare"]))
            return results
        finally:
            if store:
                store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=300, help="per side and round")
    parser.add_argument("--chunk", type=int, default=50, help="deliveries between switches")
    parser.add_argument("--operations", choices=("off", "on", "both"), default="both")
    parser.add_argument("--receiver-ms", type=float, default=0.0)
    parser.add_argument("--smoke", action="store_true", help="one tiny round (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.requests, args.chunk = 1, 6, 3
    configurations = {"off": [False], "on": [True], "both": [False, True]}[args.operations]
    print(
        f"deliver-webhook vs a bare Flask route, in-process WSGI, {args.rounds} rounds x"
        f" {args.requests} deliveries per side; receiver answers after {args.receiver_ms:g} ms"
    )
    with receiver(delay=args.receiver_ms / 1000) as target:
        for operations in configurations:
            rounds = compare(operations, target, args.rounds, args.requests, args.chunk)
            ours = statistics.median(o for o, _ in rounds)
            bare = statistics.median(b for _, b in rounds)
            print(
                f"log, guard, metrics {'on ' if operations else 'off'}:"
                f" ours {ours:6.0f}/s  bare {bare:6.0f}/s"
                f"  ours/bare {spread([o / b for o, b in rounds])}"
            )


if __name__ == "__main__":
    main()
