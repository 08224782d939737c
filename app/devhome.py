"""The dev landing page: under ``QSTASH_DEV=1``, ``GET /`` links what ``flask dev`` runs.

It lists the jobs (URL, payload fields, schedule), the newest emails in the outbox (each
readable at ``/dev/outbox/<file>``), the email previews, the dashboard and the dev server,
and says how a second terminal joins. It is mounted only in dev mode, and answers only
requests addressed to a loopback host: the outbox holds working links (password resets),
which a site that rebinds its DNS name to 127.0.0.1 must not be able to read.
Nothing here is mounted in production, and nothing here knows a particular job.
"""

from __future__ import annotations

import heapq
import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, render_template, request, send_from_directory
from werkzeug.wrappers import Response as BaseResponse

from app.config import DEV_APP_URL, DEV_IDENTITY
from app.mail import outbox_folder

if TYPE_CHECKING:
    from flask import Flask

    from app.jobs import Job, JobRegistry

#: Emails listed on the page, newest first; the outbox may hold thousands.
OUTBOX_SHOWN = 20
#: Bytes of an ``.eml`` read to show its To and Subject.
HEADER_BYTES = 16 * 1024
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
EXAMPLE_KEY = "qstash_jobs.dev_example"

bp = Blueprint("devhome", __name__, template_folder="templates")


@dataclass(frozen=True)
class OutboxEmail:
    """One ``.eml`` file of the outbox, as listed on the page."""

    name: str
    written: datetime
    to: str
    subject: str


def schema_fields(job: Job) -> str:
    """Describe the payload ``job`` takes: each field's wire name, type and if required."""
    schema = job.payload_schema
    if schema is None:
        return "any JSON (no schema)"
    parts = []
    for name, declared in schema.load_fields.items():
        required = ", required" if declared.required else ""
        parts.append(f"{declared.data_key or name} ({type(declared).__name__}{required})")
    return ", ".join(parts) or "{} (no fields)"


def second_terminal(config: Mapping[str, Any]) -> str:
    """Return the ``export`` line that points another shell's flask commands at this dev setup."""
    values = {"QSTASH_DEV": "1"}
    # QSTASH_DEV=1 alone implies the default ports; other ports must be said.
    if config.get("QSTASH_URL") not in (None, DEV_IDENTITY["QSTASH_URL"]):
        values["QSTASH_URL"] = config["QSTASH_URL"]
    if config.get("APP_URL") not in (None, DEV_APP_URL):
        values["APP_URL"] = config["APP_URL"]
    return "export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in values.items())


def enqueue_command(job: str, payload: Any) -> str:
    """Return the ``flask jobs enqueue`` command line publishing ``payload`` to ``job``."""
    return f"flask --app wsgi jobs enqueue {job} {shlex.quote(json.dumps(payload))}"


def set_example(app: Flask, job: str, payload: Any) -> None:
    """Show ``payload`` for ``job`` as the page's ready-to-paste enqueue command."""
    app.extensions[EXAMPLE_KEY] = (job, payload)


def outbox(folder: Path, limit: int = OUTBOX_SHOWN) -> tuple[list[OutboxEmail], int]:
    """Return the newest ``limit`` emails of ``folder`` and how many it holds."""
    try:
        entries = [e for e in os.scandir(folder) if e.name.endswith(".eml") and e.is_file()]
    except OSError:
        return [], 0
    newest = heapq.nlargest(limit, entries, key=_mtime)
    return [_email(entry) for entry in newest], len(entries)


def _mtime(entry: os.DirEntry[str]) -> float:
    try:
        return entry.stat().st_mtime
    except OSError:
        return 0.0


def _email(entry: os.DirEntry[str]) -> OutboxEmail:
    try:
        with open(entry.path, "rb") as file:
            head = file.read(HEADER_BYTES)
    except OSError:
        head = b""
    headers = BytesHeaderParser(policy=default_policy).parsebytes(head)
    written = datetime.fromtimestamp(_mtime(entry), UTC)
    return OutboxEmail(entry.name, written, str(headers["To"] or ""), str(headers["Subject"] or ""))


def _loopback_only() -> None:
    hostname = urlsplit(f"//{request.host}").hostname
    if hostname not in LOOPBACK_HOSTS:
        abort(404)


def _secure_headers(response: BaseResponse) -> BaseResponse:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/")
def index() -> str:
    """Render the landing page."""
    app = current_app
    registry: JobRegistry = app.extensions["qstash_jobs"]
    folder = outbox_folder(app)
    emails, total = outbox(folder)
    example = app.extensions.get(EXAMPLE_KEY)
    return render_template(
        "devhome/index.html",
        jobs=[(job, schema_fields(job)) for job in registry],
        app_url=app.config.get("APP_URL") or "",
        qstash_url=app.config.get("QSTASH_URL"),
        resend=bool(app.config.get("RESEND_API_KEY")),
        outbox_path=folder.resolve(),
        emails=emails,
        total=total,
        previews="email_preview" in app.blueprints,
        dashboard="dashboard" in app.blueprints,
        metrics=bool(app.config.get("METRICS")),
        join=second_terminal(app.config),
        example=enqueue_command(*example) if example else None,
    )


@bp.get("/dev/outbox/<name>")
def outbox_file(name: str) -> BaseResponse:
    """Show one outbox email as plain text (its raw MIME source)."""
    if not name.endswith(".eml"):
        abort(404)
    # send_from_directory refuses names that leave the folder (.., absolute, NUL).
    return send_from_directory(
        outbox_folder(current_app).resolve(), name, mimetype="text/plain", max_age=0
    )


bp.before_request(_loopback_only)
bp.after_request(_secure_headers)


def init_app(app: Flask) -> None:
    """Mount the landing page at ``/`` and the outbox reader at ``/dev/outbox/``."""
    app.register_blueprint(bp)
