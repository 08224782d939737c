"""``flask qstash dev`` (the dev server alone) and ``flask dev`` (app + dev server).

Neither needs a configured app to start: ``flask dev`` puts the dev identity into the
environment first (``QSTASH_DEV=1``, ``QSTASH_URL`` and ``APP_URL`` on loopback, debug mode,
a random ``DASHBOARD_TOKEN``) and only then loads the app through Flask's ``ScriptInfo``,
so a fresh checkout runs with no keys. Its banner prints commands that work as pasted:
how a second terminal joins, a ``flask jobs enqueue`` and a ``curl`` line with a payload
the job accepts, the landing page, the dashboard token and the outbox folder.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click
from flask import Flask
from flask.cli import ScriptInfo
from werkzeug.serving import WSGIRequestHandler, make_server

from app.devhome import enqueue_command, second_terminal, set_example
from app.devserver.delivery import AttemptEvent
from app.devserver.server import DEFAULT_PORT, DevServer
from app.jobs import URL_PREFIX
from app.mail import outbox_folder

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

DEFAULT_DB = Path("instance") / "qstash-dev.sqlite3"
APP_PORT = 5000
#: Characters of an endpoint's error answer shown on its delivery line.
REASON_CHARS = 300
#: Bytes of an answer parsed as JSON to find its reason (answers are kept up to 1 MiB).
REASON_BYTES = 64 * 1024
#: --host values that serve 127.0.0.1, where the JS SDK's dev mode looks.
LOCAL_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0"}


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


def _start(server: DevServer, host: str, port: int, option: str = "--port") -> None:
    try:
        server.start(host, port)
    except (OSError, SystemExit):  # werkzeug exits on "address in use" after saying so
        server.stop()
        raise click.ClickException(
            f"cannot listen on {host}:{port} (in use?); choose another {option}"
        ) from None


def one_line(text: str, limit: int) -> str:
    """Return ``text`` on one printable line of at most ``limit`` characters."""
    # Answers come from any endpoint: no terminal escape sequence reaches the terminal.
    clean = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def reason(event: AttemptEvent) -> str:
    """Return why the endpoint refused an attempt (its error JSON, or its text), or ""."""
    status, body = event.response.status, event.response.body
    if status is None or 200 <= status < 300 or not body:
        return ""
    text = body[:REASON_BYTES].decode("utf-8", "replace")
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):
        return one_line(text, REASON_CHARS)
    if not isinstance(answer, dict) or not isinstance(answer.get("message"), str):
        return one_line(text, REASON_CHARS)
    found = f"{answer.get('code') or 'error'}: {answer['message']}"
    if answer.get("errors"):
        found += f" {json.dumps(answer['errors'], ensure_ascii=False)}"
    return one_line(found, REASON_CHARS)


def sdk_environment(server: DevServer) -> dict[str, str]:
    """Return the variables this app and each official SDK read to find ``server``."""
    port = urlsplit(server.url).port
    return {**server.env(), "QSTASH_DEV": "1", "QSTASH_DEV_PORT": str(port)}


def who_reads_what(host: str) -> list[str]:
    """Return which of ``sdk_environment``'s variables each reader takes, one line each.

    ``@upstash/qstash`` with ``QSTASH_DEV=1`` ignores ``QSTASH_URL``: it calls
    ``http://127.0.0.1:$QSTASH_DEV_PORT`` (8080 unset) with Upstash's dev identity, and
    downloads Upstash's binary when nothing answers there.
    """
    lines = [
        "this app           QSTASH_DEV=1 and QSTASH_URL (the dev token and keys are implied)",
        "qstash (PyPI)      QSTASH_URL; pass QSTASH_TOKEN to QStash() and the keys to Receiver()",
        "@upstash/qstash    QSTASH_DEV=1 and QSTASH_DEV_PORT (dev mode ignores QSTASH_URL);",
        "                   (without dev mode: QSTASH_URL, QSTASH_TOKEN and the keys)",
    ]
    if host not in LOCAL_HOSTS:
        lines.append(
            f"                   (dev mode calls 127.0.0.1, which --host {host} does not serve)"
        )
    return lines


def _print_attempt(event: AttemptEvent) -> None:
    why = reason(event)
    line = f"{time.strftime('%H:%M:%S')} {event.line()}" + (f" ← {why}" if why else "")
    # print, not click.echo: this runs once per attempt and echo probes the terminal each time.
    print(line, flush=True)


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
    for name, value in sdk_environment(server).items():
        click.echo(f"{name}={value}")
    click.echo("")
    for line in who_reads_what(host):
        click.echo(f"  {line}")
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
    _start(server, "127.0.0.1", qstash_port, "--qstash-port")
    # Bind the app's port first (it may be 0), so APP_URL is known before the app loads.
    deferred = _Deferred()
    try:
        app_http = make_server(
            "127.0.0.1", port, deferred, threaded=True, request_handler=_AppRequestHandler
        )
    except (OSError, SystemExit):
        server.stop()
        raise click.ClickException(
            f"cannot listen on 127.0.0.1:{port} for the app (in use?); choose another --port"
        ) from None
    try:
        app_url = f"http://127.0.0.1:{app_http.port}"
        dashboard_token = _dev_environment(server, app_url, demo)
        app = deferred.app = ctx.ensure_object(ScriptInfo).load_app()
        threading.Thread(target=app_http.serve_forever, name="app", daemon=True).start()
        server.on_attempt(_print_attempt)
        _print_howto(server, app, app_url, dashboard_token)
        if demo:
            from app.devserver.demo import run_demo

            run_demo(server, app, app_url)
        _wait_for_signal()
    finally:
        app_http.shutdown()
        server.stop()


class _AppRequestHandler(WSGIRequestHandler):
    """Leave out the access line of a delivery: its attempt line says it all."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if not self.path.startswith(f"{URL_PREFIX}/"):
            super().log_request(code, size)


class _Deferred:
    """A WSGI app that forwards to the Flask app once it is loaded."""

    app: Flask | None = None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        assert self.app is not None
        return self.app(environ, start_response)


def _dev_environment(server: DevServer, app_url: str, demo: bool) -> str | None:
    """Point the app at the dev server with the dev identity, before it is loaded.

    Return the dashboard token made up for this run, None if the user set one.
    """
    os.environ.update(server.env())
    os.environ.update(QSTASH_DEV="1", APP_URL=app_url)
    # Debug mode mounts the email previews; FLASK_DEBUG=0 still turns it off.
    os.environ.setdefault("FLASK_DEBUG", "1")
    token = None
    if not os.environ.get("DASHBOARD_TOKEN"):
        token = os.environ["DASHBOARD_TOKEN"] = secrets.token_urlsafe(18)
    # One local storage folder that the image job and the demo agree on.
    os.environ.setdefault("STORAGE_ROOT", str(Path("instance", "storage").resolve()))
    if demo:
        # The demo's webhook receiver listens on loopback, which webhook delivery refuses
        # unless a network is opened on purpose.
        allowed = os.environ.get("WEBHOOK_ALLOWED_NETWORKS", "")
        os.environ["WEBHOOK_ALLOWED_NETWORKS"] = ",".join(
            part for part in (allowed, "127.0.0.1/32") if part
        )
    return token


def _print_howto(server: DevServer, app: Flask, app_url: str, dashboard_token: str | None) -> None:
    from app.devserver.demo import example

    jobs = [job.name for job in app.extensions.get("qstash_jobs", [])]
    click.echo(
        f"App on {app_url} (jobs: {', '.join(jobs) or 'none'}); QStash dev server on {server.url}"
    )
    click.echo(f"  {app_url}/  links the jobs, the outbox, the email previews and the dashboard")
    if "dashboard" in app.blueprints:
        token = dashboard_token or "the DASHBOARD_TOKEN you set"
        click.echo(f"  {app_url}/dashboard/  sign in with {token}")
    if app.config.get("RESEND_API_KEY"):
        click.echo("  email goes through Resend (RESEND_API_KEY is set)")
    else:
        click.echo(f"  emails are written to {outbox_folder(app).resolve()}")
    env = sdk_environment(server)
    click.echo(
        f"  official SDKs: QSTASH_URL={env['QSTASH_URL']} QSTASH_TOKEN=<the dev token>, or for"
        f" @upstash/qstash in dev mode QSTASH_DEV=1 QSTASH_DEV_PORT={env['QSTASH_DEV_PORT']}"
    )
    found = example(app, app_url)
    click.echo("Enqueue a job from a second terminal in this folder:")
    click.echo(f"  {second_terminal(app.config)}   # or put these in .env")
    if found is None:
        click.echo("  flask --app wsgi jobs list   # each job's payload fields")
        click.echo("  flask --app wsgi jobs enqueue NAME '<json>'")
    else:
        set_example(app, *found)
        job, payload = found
        url = f"{server.url}/v2/publish/{app_url}{URL_PREFIX}/{job}"
        click.echo(f"  {enqueue_command(job, payload)}")
        click.echo(
            "or with curl:\n"
            f"  curl -X POST {shlex.quote(url)} \\\n"
            f"    -H {shlex.quote(f'Authorization: Bearer {server.token}')} \\\n"
            f"    -H 'Content-Type: application/json' -d {shlex.quote(json.dumps(payload))}"
        )
    click.echo("One line per delivery attempt follows. Ctrl-C stops.")
