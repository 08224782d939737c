"""The app the receiver benchmark serves: one no-op job, and the same job unguarded.

The unguarded twin is what a user would write without ``with_qstash``: parse the JSON
body, call the same handler, answer its JSON. The difference is the guard's own cost:
signature verification, the Delivery, the outcome mapping.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, request

from app import create_app
from app.delivery import Delivery
from app.jobs import JobRegistry

CURRENT_KEY = "sig_bench_current_0123456789abcd"
NEXT_KEY = "sig_bench_next_0123456789abcdefg"
APP_URL = "http://127.0.0.1"
CONFIG = {
    "QSTASH_CURRENT_SIGNING_KEY": CURRENT_KEY,
    "QSTASH_NEXT_SIGNING_KEY": NEXT_KEY,
    "APP_URL": APP_URL,
    # The receiver alone: the delivery log, duplicate guard and metrics have their own
    # benchmark (bench/operations.py).
    "DELIVERY_LOG": False,
    "DUPLICATE_GUARD": False,
    "METRICS": False,
}


def build() -> Flask:
    """Return an app with a guarded no-op job and its unguarded twin at /plain/noop."""
    registry = JobRegistry()

    def noop(payload: Any, delivery: Delivery | None) -> dict[str, bool]:
        return {"ok": True}

    registry.job("noop")(noop)
    flask_app = create_app(CONFIG, registry=registry)

    @flask_app.post("/plain/noop")
    def plain() -> Response:
        return jsonify(noop(request.get_json(), None))

    return flask_app


app = build()
