"""The WSGI apps of ``bench/workflows.py``, each behind the same byte counter.

- ``ours()``: ``wsgi:app`` (``JOBS_PACKAGES=bench._workflow_jobs``: the workflow and the
  chained job);
- ``peer()``: a Flask app serving the same steps with the official ``upstash-workflow``
  SDK (``Serve``), its QStash client and receiver pointed at the dev server.

gunicorn loads them as ``bench._workflow_apps:ours()`` / ``:peer()``. Every request's
body size (its ``Content-Length``) is added to a per-worker counter file in
``$BENCH_RECEIVED_DIR``, which the benchmark sums before and after a run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: One counter file per worker: "<body bytes> <requests>", fixed width, rewritten in place.
WIDTH = 40


class Counted:
    """WSGI middleware: count the body bytes and requests the app receives."""

    def __init__(self, app: WSGIApp, folder: str) -> None:
        self.app = app
        self.folder = folder
        self.pid = 0
        self.fd = -1
        self.bytes = 0
        self.requests = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if self.pid != os.getpid():  # gunicorn forks the workers: one file each
            self.pid = os.getpid()
            path = Path(self.folder, f"received-{self.pid}.txt")
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self.bytes = self.requests = 0
        self.bytes += int(environ.get("CONTENT_LENGTH") or 0)
        self.requests += 1
        os.pwrite(self.fd, f"{self.bytes} {self.requests}".ljust(WIDTH).encode(), 0)
        return self.app(environ, start_response)


def received(folder: Path) -> tuple[int, int]:
    """Return the body bytes and requests every worker counted so far."""
    total_bytes = total_requests = 0
    for path in folder.glob("received-*.txt"):
        fields = path.read_text().split()
        if len(fields) == 2:
            total_bytes += int(fields[0])
            total_requests += int(fields[1])
    return total_bytes, total_requests


def ours() -> Counted:
    """The project's app, as ``wsgi:app`` builds it."""
    from wsgi import app

    return Counted(app, os.environ["BENCH_RECEIVED_DIR"])


def peer() -> Counted:
    """The same steps with the official SDK: ``POST /bench-steps`` with ``{"n", "tag"}``."""
    from flask import Flask
    from qstash import QStash, Receiver
    from upstash_workflow.flask import Serve

    from app.config import DEV_IDENTITY
    from bench._workflow_jobs import finished, work

    app = Flask("peer")
    serve = Serve(app)

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @serve.route(
        "/bench-steps",
        qstash_client=QStash(
            DEV_IDENTITY["QSTASH_TOKEN"], base_url=os.environ["QSTASH_URL"], retry=False
        ),
        receiver=Receiver(
            current_signing_key=DEV_IDENTITY["QSTASH_CURRENT_SIGNING_KEY"],
            next_signing_key=DEV_IDENTITY["QSTASH_NEXT_SIGNING_KEY"],
        ),
        retries=0,
    )
    def steps(context: Any) -> None:
        payload = context.request_payload
        previous = None
        for number in range(payload["n"]):
            previous = context.run(f"step-{number}", partial(work, number, previous))
        finished(payload["tag"], context.workflow_run_id)

    return Counted(app, os.environ["BENCH_RECEIVED_DIR"])
