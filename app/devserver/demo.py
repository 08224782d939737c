"""``flask dev --demo``: one job of each kind through the whole loop, outcomes printed.

The demo publishes with plain HTTP calls to the dev server's ``/v2/publish`` (exactly what
any QStash client sends): an email, an image it draws on the fly and puts into local
storage, and a webhook to a receiver it runs on loopback. It then waits for each
message's first attempt and prints what the app answered. It also starts one run of the
``onboard-user`` workflow (``jobs/onboarding.py``) with ``Workflow.start``, its sleep and
upgrade window cut to a second each and its CRM a second loopback receiver, and prints
the run's steps once it has completed. ``example`` picks the payload ``flask dev``'s
banner prints: one the app's own schema accepts.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import httpx
from flask import Flask
from marshmallow import ValidationError
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from app.devserver.cli import one_line
from app.devserver.delivery import AttemptEvent
from app.devserver.server import DevServer, QuietHandler
from app.store import get_store

if TYPE_CHECKING:
    from app.jobs import Job
    from app.workflows import Run

WAIT_SECONDS = 30.0
IMAGE_KEY = "demo/sample.png"
#: Characters of a job's answer printed (the JSON in full up to this, never cut inside).
ANSWER_CHARS = 2000
ONBOARDING = "onboard-user"
#: The demo's onboarding run sleeps 1 s and waits 1 s for an upgrade (by default 3 and 7 days).
ONBOARDING_SETTINGS = {"ONBOARDING_QUIET_PERIOD": "1s", "ONBOARDING_UPGRADE_WINDOW": "1s"}


class WebhookReceiver:
    """A loopback HTTP endpoint that records what it receives and answers 200."""

    def __init__(self, path: str = "/webhooks/demo") -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Event()
        self._http = make_server(
            "127.0.0.1",
            0,
            Request.application(self._handle),
            threaded=True,
            request_handler=QuietHandler,
        )
        self.url = f"http://127.0.0.1:{self._http.port}{path}"
        threading.Thread(target=self._http.serve_forever, name="demo-receiver", daemon=True).start()

    def _handle(self, request: Request) -> Response:
        self.received.append((dict(request.headers), request.get_data()))
        self.arrived.set()
        return Response('{"received":true}', 200, mimetype="application/json")


class Outcomes:
    """Collects the first attempt of each watched message."""

    def __init__(self) -> None:
        self.events: dict[str, AttemptEvent] = {}
        self._changed = threading.Condition()

    def __call__(self, event: AttemptEvent) -> None:
        with self._changed:
            self.events.setdefault(event.message.id, event)
            self._changed.notify_all()

    def wait(self, message_ids: list[str], timeout: float) -> None:
        """Wait until every id has an attempt, or ``timeout`` passes."""
        with self._changed:
            self._changed.wait_for(lambda: all(i in self.events for i in message_ids), timeout)


def make_image(path: Path) -> None:
    """Draw a 1200×800 gradient PNG at ``path``."""
    from PIL import Image

    image = Image.linear_gradient("L").resize((1200, 800)).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")


def storage_root(app: Flask) -> Path:
    """Return the local storage folder the app reads images from."""
    configured = app.config.get("STORAGE_ROOT") or os.environ.get("STORAGE_ROOT")
    return Path(configured) if configured else Path(app.instance_path) / "storage"


def welcome_email(app_url: str) -> dict[str, Any]:
    """Return a send-email payload for the bundled ``welcome`` template."""
    return {
        "to": "newcomer@example.com",
        "template": "welcome",
        "data": {"name": "Newcomer", "loginUrl": f"{app_url}/login"},
    }


def _accepts(job: Job, payload: Any) -> bool:
    if job.schema is None:
        return True
    try:
        job.schema.load(payload)
    except ValidationError:
        return False
    return True


def example(app: Flask, app_url: str) -> tuple[str, Any] | None:
    """Return a job of ``app`` and a payload its schema accepts, or None if none is known.

    The bundled send-email with the welcome template first; else the first job that takes
    ``{}``, a job QStash calls on a schedule last.
    """
    registry = list(app.extensions.get("qstash_jobs", []))
    ordered = sorted(registry, key=lambda job: job.cron is not None)
    candidates = [(job, welcome_email(app_url)) for job in registry if job.name == "send-email"]
    candidates += [(job, {}) for job in ordered]
    for job, payload in candidates:
        if _accepts(job, payload):
            return job.name, payload
    return None


def payloads(app: Flask, app_url: str, receiver: WebhookReceiver) -> dict[str, Any]:
    """Return one payload per demo job, in the jobs' wire shapes."""
    make_image(storage_root(app) / IMAGE_KEY)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    return {
        "send-email": welcome_email(app_url),
        "process-image": {
            "fileKey": IMAGE_KEY,
            "userId": "demo-user",
            "operations": ["resize", "webp", "thumbnail"],
            "targetWidth": 320,
        },
        "deliver-webhook": {
            "webhookId": "wh_demo",
            "eventType": "demo.hello",
            "payload": {"hello": "world"},
            "targetUrl": receiver.url,
            "secret": secret,
        },
    }


def publish(server: DevServer, url: str, payload: Any) -> str:
    """Publish ``payload`` to ``url`` through the dev server's REST API; return the id."""
    response = httpx.post(
        f"{server.url}/v2/publish/{url}",
        content=json.dumps(payload),
        headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"},
        timeout=10,
    )
    response.raise_for_status()
    message_id: str = response.json()["messageId"]
    return message_id


def run_demo(server: DevServer, app: Flask, app_url: str) -> None:
    """Enqueue one job of each kind and print the outcome of its first attempt."""
    registered = {job.name for job in app.extensions.get("qstash_jobs", [])}
    receiver = WebhookReceiver()
    outcomes = Outcomes()
    server.on_attempt(outcomes)
    sent: dict[str, str] = {}
    for job, payload in payloads(app, app_url, receiver).items():
        if job not in registered:
            click.echo(f"demo: {job}: skipped, no such job in this app")
            continue
        sent[job] = publish(server, f"{app_url}/api/jobs/{job}", payload)
        click.echo(f"demo: {job}: enqueued as {sent[job]}")
    crm = WebhookReceiver("/crm/onboarded")
    with onboarding_settings(app, crm.url):
        run_id = start_onboarding(app, app_url)
        outcomes.wait(list(sent.values()), WAIT_SECONDS)
        for job, message_id in sent.items():
            click.echo(f"demo: {job}: {describe(outcomes.events.get(message_id))}")
        if "deliver-webhook" in sent:
            receiver.arrived.wait(5)
            click.echo(
                f"demo: webhook receiver at {receiver.url} got {len(receiver.received)} call(s)"
            )
        if run_id is not None:
            click.echo(f"demo: {ONBOARDING}: {describe_run(wait_for_run(app, run_id))}")
            click.echo(f"demo: CRM receiver at {crm.url} got {len(crm.received)} call(s)")
            click.echo(f"demo: flask --app wsgi workflows show {run_id}  shows each step")
    click.echo("demo: done; the servers keep running (Ctrl-C stops)")


@contextmanager
def onboarding_settings(app: Flask, crm_url: str) -> Iterator[None]:
    """Give onboarding runs short waits and ``crm_url`` as CRM until the block ends."""
    demo = {**ONBOARDING_SETTINGS, "ONBOARDING_CRM_URL": crm_url}
    saved = {name: app.config[name] for name in demo if name in app.config}
    app.config.update(demo)
    try:
        yield
    finally:
        for name in demo:
            app.config.pop(name, None)
        app.config.update(saved)


def start_onboarding(app: Flask, app_url: str) -> str | None:
    """Start one onboard-user run for the demo's newcomer; return its id (None: skipped)."""
    if ONBOARDING not in app.extensions.get("qstash_jobs", []):
        click.echo(f"demo: {ONBOARDING}: skipped, no such workflow in this app")
        return None
    if get_store(app) is None:
        click.echo(f"demo: {ONBOARDING}: skipped, workflows need the store (DATABASE_URL)")
        return None
    workflow = app.extensions["qstash_jobs"][ONBOARDING]
    user = {"email": "newcomer@example.com", "name": "Newcomer", "loginUrl": f"{app_url}/login"}
    with app.app_context():
        run_id: str = workflow.start(user)
    click.echo(
        f"demo: {ONBOARDING}: started run {run_id}: it sleeps 1s, waits 1s for an upgrade"
        " (3 and 7 days outside the demo), then sends the follow-up and tells the CRM"
    )
    return run_id


def wait_for_run(app: Flask, run_id: str, timeout: float = WAIT_SECONDS) -> Run | None:
    """Return run ``run_id`` once it has finished; None if it has not within ``timeout``."""
    from app.workflows import UnknownRun, get_run

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            try:
                run = get_run(run_id)
            except UnknownRun:  # its first delivery has not arrived yet
                run = None
        if run is not None and run.finished:
            return run
        time.sleep(0.1)
    return None


def describe_run(run: Run | None) -> str:
    """Say how a run ended: its state, how long it took, its steps and its output."""
    if run is None:
        return f"not finished within {WAIT_SECONDS:g}s"
    took = ((run.finished_ms or run.updated_ms) - run.created_ms) / 1000
    steps = ", ".join(step.name for step in run.steps)
    ending = run.output if run.error is None else f"{run.failed_step}: {run.error}"
    return f"{run.state} in {took:.1f}s: {steps} -> {ending}"


def describe(event: AttemptEvent | None) -> str:
    """Say what the app answered to one attempt: status, outcome and its whole JSON answer."""
    if event is None:
        return f"no answer within {WAIT_SECONDS:g}s"
    status = event.response.status or event.response.error
    text = event.response.body.decode("utf-8", "replace")
    try:
        # ASCII JSON: printable, on one line, and it parses back to what the job returned.
        answer = json.dumps(json.loads(text))
    except (ValueError, RecursionError):
        answer = one_line(text, ANSWER_CHARS + 1)
    if len(answer) > ANSWER_CHARS:
        return f"{status} {event.outcome}: an answer of {len(event.response.body)} bytes"
    return f"{status} {event.outcome}: {answer}"
