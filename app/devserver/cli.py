"""``flask qstash dev`` (the dev server alone) and ``flask dev`` (app + dev server).

Neither needs a configured app to start: ``flask dev`` puts the dev identity into the
environment first (``QSTASH_DEV=1``, ``QSTASH_URL`` and ``APP_URL`` on loopback) and only
then loads the app through Flask's ``ScriptInfo``, so a fresh checkout runs with no keys.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
from flask import Flask
from flask.cli import ScriptInfo
from werkzeug.serving import make_server

from app.devserver.delivery import AttemptEvent
from app.devserver.server import DEFAULT_PORT, DevServer

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

DEFAULT_DB = Path("instance") / "qstash-dev.sqlite3"
APP_PORT = 5000


def _server_options(command: Any) -> Any:
    options = [
        click.option(
            "--db",
            type=click.Path(dir_okay=False, path_type=Path),
            default=DEFAULT_DB,
            show_default=True,
            help="SQLite file holding messages, schedules, DLQ.",
        ),
        click.option(
            "--time-scale",
            type=click.FloatRange(min=0, min_open=True),
            default=1.0,
            show_default=True,
            help="Multiply every delay, backoff and cron wait (tests: 0.01).",
        ),
        click.option(
            "--concurrency",
            type=click.IntRange(min=1),
            default=32,
            show_default=True,
            help="Deliveries in flight at once.",
        ),
        click.option(
            "--per-destination",
            type=click.IntRange(min=1),
            default=None,
            help="Deliveries in flight to one endpoint [default: concurrency/2].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _make_server(
    db: Path, time_scale: float, concurrency: int, per_destination: int | None
) -> DevServer:
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        return DevServer(
            db=db, time_scale=time_scale, concurrency=concurrency, per_destination=per_destination
        )
    except (OSError, sqlite3.Error) as exc:
        raise click.ClickException(f"cannot open the state database {db}: {exc}") from None


def _start(server: DevServer, host: str, port: int) -> None:
    try:
        server.start(host, port)
    except (OSError, SystemExit):  # werkzeug exits on "address in use" after saying so
        server.stop()
        raise click.ClickException(
            f"cannot listen on {host}:{port}; choose another --port"
        ) from None


def _print_attempt(event: AttemptEvent) -> None:
    # print, not click.echo: this runs once per attempt and echo probes the terminal each time.
    print(f"{time.strftime('%H:%M:%S')} {event.line()}", flush=True)


def _wait_for_signal() -> None:
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    while not stop.is_set():
        stop.wait(0.5)


@click.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True)
@_server_options
def dev_server(
    host: str, port: int, db: Path, time_scale: float, concurrency: int, per_destination: int | None
) -> None:
    """Run a local QStash-compatible server (Upstash's dev identity)."""
    server = _make_server(db, time_scale, concurrency, per_destination)
    _start(server, host, port)
    click.echo(f"QStash dev server on {server.url} (state in {db}, time scale {time_scale:g})")
    click.echo("Use it from your app or the official SDKs with:\n")
    for name, value in {**server.env(), "QSTASH_DEV": "1"}.items():
        click.echo(f"{name}={value}")
    click.echo("\nOne line per delivery attempt follows. Ctrl-C stops.")
    server.on_attempt(_print_attempt)
    try:
        _wait_for_signal()
    finally:
        server.stop()


@click.command("dev")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=APP_PORT,
    show_default=True,
    help="Port of the app.",
)
@click.option(
    "--qstash-port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port of the dev server.",
)
@click.option("--demo", is_flag=True, help="Enqueue one job of each kind and show the outcomes.")
@_server_options
@click.pass_context
def dev(
    ctx: click.Context,
    port: int,
    qstash_port: int,
    demo: bool,
    db: Path,
    time_scale: float,
    concurrency: int,
    per_destination: int | None,
) -> None:
    """Run the app and the QStash dev server together, wired to each other."""
    server = _make_server(db, time_scale, concurrency, per_destination)
    _start(server, "127.0.0.1", qstash_port)
    # Bind the app's port first (it may be 0), so APP_URL is known before the app loads.
    deferred = _Deferred()
    try:
        app_http = make_server("127.0.0.1", port, deferred, threaded=True)
    except (OSError, SystemExit):
        server.stop()
        raise click.ClickException(
            f"cannot listen on 127.0.0.1:{port} for the app; choose another --port"
        ) from None
    try:
        app_url = f"http://127.0.0.1:{app_http.port}"
        _dev_environment(server, app_url, demo)
        app = deferred.app = ctx.ensure_object(ScriptInfo).load_app()
        threading.Thread(target=app_http.serve_forever, name="app", daemon=True).start()
        server.on_attempt(_print_attempt)
        _print_howto(server, app, app_url)
        if demo:
            from app.devserver.demo import run_demo

            run_demo(server, app, app_url)
        _wait_for_signal()
    finally:
        app_http.shutdown()
        server.stop()


class _Deferred:
    """A WSGI app that forwards to the Flask app once it is loaded."""

    app: Flask | None = None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        assert self.app is not None
        return self.app(environ, start_response)


def _dev_environment(server: DevServer, app_url: str, demo: bool) -> None:
    """Point the app at the dev server with the dev identity, before it is loaded."""
    os.environ.update(server.env())
    os.environ.update(QSTASH_DEV="1", APP_URL=app_url)
    # One local storage folder that the image job and the demo agree on.
    os.environ.setdefault("STORAGE_ROOT", str(Path("instance", "storage").resolve()))
    if demo:
        # The demo's webhook receiver listens on loopback, which webhook delivery refuses
        # unless a network is opened on purpose.
        allowed = os.environ.get("WEBHOOK_ALLOWED_NETWORKS", "")
        os.environ["WEBHOOK_ALLOWED_NETWORKS"] = ",".join(
            part for part in (allowed, "127.0.0.1/32") if part
        )


def _print_howto(server: DevServer, app: Flask, app_url: str) -> None:
    jobs = [job.name for job in app.extensions.get("qstash_jobs", [])]
    click.echo(
        f"App on {app_url} (jobs: {', '.join(jobs) or 'none'}); QStash dev server on {server.url}"
    )
    example = jobs[0] if jobs else "send-email"
    click.echo(
        "Enqueue a job:\n"
        f"  curl -X POST '{server.url}/v2/publish/{app_url}/api/jobs/{example}' \\\n"
        f"    -H 'Authorization: Bearer {server.token}' \\\n"
        "    -H 'Content-Type: application/json' -d '{...payload...}'\n"
        f"or from Python with QSTASH_URL={server.url} QSTASH_TOKEN=<the dev token> set.\n"
        "One line per delivery attempt follows. Ctrl-C stops."
    )
