"""onboard-user (jobs/onboarding.py) end to end on the stub queue's virtual clock.

Each run goes through signed deliveries and a real SQLite store; the emails it publishes
are delivered to the real send-email job, which writes them to an outbox folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from marshmallow import ValidationError

from app.outbound import CLIENT_EXTENSION
from app.testing import StubQueue
from app.workflows import Run, UnknownRun, get_run, notify
from app.workflows import state as workflow_state
from jobs.onboarding import onboard_user, upgraded_event
from tests.jobs.conftest import make_app
from tests.jobs.recorder import Recorder, recording_server

DAY = 86_400
USER = {"email": "Ada@Example.com", "name": "Ada", "loginUrl": "https://app.example.com/login"}


@pytest.fixture
def app(job_config: dict[str, Any], tmp_path: Path) -> Iterator[Flask]:
    config = {
        **job_config,
        "DATABASE_URL": f"sqlite:///{tmp_path}/store.sqlite3",
        "DELIVERY_LOG": True,
        "DUPLICATE_GUARD": True,
        "EMAIL_OUTBOX": str(tmp_path / "outbox"),
    }
    app = make_app(config, tmp_path / "instance")
    yield app
    app.extensions["qstash_jobs.store"].close()
    client = app.extensions.get(CLIENT_EXTENSION)  # ctx.call's pooled client
    if client is not None:
        client[1].close()


@pytest.fixture
def queue(app: Flask) -> StubQueue:
    return StubQueue.install(app)


@pytest.fixture
def crm() -> Iterator[Recorder]:
    with recording_server() as recorder:
        yield recorder


def start(app: Flask, payload: Any = USER) -> str:
    with app.app_context():
        return onboard_user.start(payload)


def run(app: Flask, run_id: str) -> Run:
    with app.app_context():
        return get_run(run_id)


def deliver_until(queue: StubQueue, done: Callable[[], bool]) -> None:
    """Deliver pending messages one at a time, as ``drain()`` does, until ``done()``."""
    while not done():
        entry = queue.pending[0]
        queue.clock = max(queue.clock, entry.due)
        queue._attempt(entry, {}, True)  # noqa: SLF001 - one delivery of drain()


def waiting_for(app: Flask, run_id: str, kind: str) -> Callable[[], bool]:
    """Return whether run ``run_id`` waits on a ``kind`` ("sleep", "event") now."""

    def check() -> bool:
        try:
            return (run(app, run_id).waiting_for or "").startswith(kind)
        except UnknownRun:  # its start delivery has not arrived yet
            return False

    return check


def emails(tmp_path: Path) -> list[Message]:
    """Return the emails the send-email job wrote, oldest first."""
    files = sorted((tmp_path / "outbox").glob("*.eml"), key=lambda path: path.stat().st_mtime_ns)
    return [message_from_bytes(path.read_bytes()) for path in files]


def steps(finished: Run) -> list[str]:
    return [step.name for step in finished.steps]


def output(finished: Run) -> Any:
    assert finished.state == "completed", (finished.state, finished.error)
    return json.loads(finished.output or "null")


def test_without_an_upgrade_the_follow_up_goes_out_after_three_plus_seven_days(
    app: Flask, queue: StubQueue, tmp_path: Path
) -> None:
    """No upgrade: welcome, a 3-day sleep, a 7-day wait that times out, the follow-up."""
    started = queue.clock
    run_id = start(app)
    queue.drain(fail_fast=True)
    finished = run(app, run_id)
    result = output(finished)
    assert result["upgraded"] is False and result["crmStatus"] is None
    follow_up = queue.published("send-email")[1]
    assert result["followUp"] == follow_up.message_id
    assert steps(finished) == [
        "settings", "welcome-email", "quiet-period", "upgraded", "follow-up-email",
    ]  # fmt: skip
    assert queue.clock - started >= 10 * DAY
    welcome, trial = emails(tmp_path)
    assert welcome["To"] == "Ada@Example.com" and "Welcome" in welcome["Subject"]
    assert trial["Subject"] == "Your free trial subscription is ending"


def test_an_upgrade_during_the_sleep_ends_the_wait_at_once(
    app: Flask, queue: StubQueue, tmp_path: Path
) -> None:
    """An upgrade notified before the run reaches its wait is kept: no follow-up."""
    started = queue.clock
    run_id = start(app)
    deliver_until(queue, waiting_for(app, run_id, "sleep"))
    with app.app_context():
        assert notify(upgraded_event("ada@example.com"), {"plan": "pro"}) == []
    deliver_until(queue, lambda: run(app, run_id).finished)
    result = output(run(app, run_id))
    assert result == {"upgraded": True, "followUp": None, "crmStatus": None}
    assert queue.clock - started == pytest.approx(3 * DAY, abs=5)
    queue.drain(fail_fast=True)
    assert len(emails(tmp_path)) == 1  # the welcome email only


def test_an_upgrade_during_the_wait_resumes_the_run(
    app: Flask, queue: StubQueue, tmp_path: Path
) -> None:
    """An upgrade notified while the run waits resumes it before the window ends."""
    started = queue.clock
    run_id = start(app)
    deliver_until(queue, waiting_for(app, run_id, "event"))
    queue.clock += 2 * DAY
    with app.app_context():
        assert notify(upgraded_event(USER["email"]), {"plan": "pro"}) == [run_id]
    deliver_until(queue, lambda: run(app, run_id).finished)
    assert output(run(app, run_id))["upgraded"] is True
    assert queue.clock - started < 6 * DAY
    queue.drain(fail_fast=True)  # the window's own timer finds the run completed
    assert len(emails(tmp_path)) == 1


def test_the_crm_hears_the_outcome_once_with_an_idempotency_key(
    app: Flask, queue: StubQueue, crm: Recorder
) -> None:
    """With ONBOARDING_CRM_URL set, one POST carries the outcome; its status is recorded."""
    app.config["ONBOARDING_CRM_URL"] = f"{crm.url}/hooks/onboarded"
    app.config["WEBHOOK_ALLOWED_NETWORKS"] = ["127.0.0.1/32"]
    run_id = start(app)
    queue.drain(fail_fast=True)
    finished = run(app, run_id)
    assert output(finished)["crmStatus"] == 200
    assert steps(finished)[-1] == "tell-crm"
    [request] = crm.requests
    assert request.path == "/hooks/onboarded"
    assert request.json() == {"email": "Ada@Example.com", "upgraded": False, "upgrade": None}
    assert request.headers["idempotency-key"] == f"{run_id}.tell-crm"


def test_settings_are_read_once_per_run(app: Flask, queue: StubQueue, crm: Recorder) -> None:
    """A CRM URL configured while a run sleeps does not change that run's steps."""
    run_id = start(app)
    deliver_until(queue, waiting_for(app, run_id, "sleep"))
    app.config["ONBOARDING_CRM_URL"] = f"{crm.url}/hooks/onboarded"
    app.config["WEBHOOK_ALLOWED_NETWORKS"] = ["127.0.0.1/32"]
    queue.drain(fail_fast=True)
    assert "tell-crm" not in steps(run(app, run_id))
    assert crm.requests == []


def test_short_settings_make_a_short_run(app: Flask, queue: StubQueue) -> None:
    """The sleep and the window come from the settings (the demo runs in seconds)."""
    app.config.update(ONBOARDING_QUIET_PERIOD="2s", ONBOARDING_UPGRADE_WINDOW=3)
    started = queue.clock
    run_id = start(app)
    queue.drain(fail_fast=True)
    assert output(run(app, run_id))["upgraded"] is False
    assert 5 <= queue.clock - started <= 8


def test_each_email_step_publishes_with_a_deduplication_id_of_its_run(
    app: Flask, queue: StubQueue
) -> None:
    """A step that runs again (a killed worker) publishes an email QStash drops."""
    run_id = start(app)
    queue.drain(fail_fast=True)
    ids = [m.options.deduplication_id for m in queue.published("send-email")]
    assert ids == [f"{run_id}.welcome-email", f"{run_id}.follow-up-email"]


def test_an_email_step_that_runs_again_sends_one_email(
    app: Flask, queue: StubQueue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery failing after the welcome publish and before its record: one email."""
    record = workflow_state.record
    failed: list[str] = []

    def record_once(engine: Any, lease: Any, step: dict[str, Any], **kwargs: Any) -> Any:
        if step["name"] == "welcome-email" and not failed:
            failed.append(step["name"])
            raise ConnectionError("the store went away after the publish")
        return record(engine, lease, step, **kwargs)

    monkeypatch.setattr(workflow_state, "record", record_once)
    run_id = start(app)
    queue.drain()
    assert failed == ["welcome-email"]
    assert output(run(app, run_id))["upgraded"] is False
    assert len(queue.published("send-email")) == 2  # the welcome email and the follow-up
    assert len(emails(tmp_path)) == 2


def test_a_bad_email_starts_nothing(app: Flask, queue: StubQueue) -> None:
    """The input schema refuses a bad address at start(); nothing is published."""
    with pytest.raises(ValidationError) as refused:
        start(app, {"email": "not-an-address"})
    assert "email" in refused.value.messages
    assert queue.messages == []
