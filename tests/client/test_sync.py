"""Schedules and queues as code, against a fake QStash holding drifted state."""

from __future__ import annotations

import pytest
from click.testing import Result
from flask import Flask
from marshmallow import Schema, fields

from app.cli import qstash
from app.errors import JobDefinitionError
from app.jobs import JobRegistry
from app.publishing.sync import desired_schedules
from tests.client.conftest import PREFIX
from tests.client.fake_qstash import FakeQStash
from tests.conftest import APP_URL

DAILY = f"{APP_URL}/api/jobs/daily-digest"
WEEKLY = f"{APP_URL}/api/jobs/weekly-report"


def _sync(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(qstash, ["schedules", "sync", *args])


@pytest.fixture
def drifted(fake: FakeQStash) -> FakeQStash:
    """QStash with a foreign schedule, a stale one of ours and a changed one; one is missing."""
    fake.add_schedule("someone-elses", "https://other.example/cron", "* * * * *")
    fake.add_schedule(f"{PREFIX}old-job", f"{APP_URL}/api/jobs/old-job", "0 0 * * *")
    fake.add_schedule(f"{PREFIX}daily-digest", DAILY, "0 8 * * *", retries=2, body="{}")
    return fake


def test_sync_creates_updates_and_deletes_ours(app: Flask, drifted: FakeQStash) -> None:
    """After sync, our schedules match the @cron jobs exactly."""
    result = _sync(app)
    assert result.exit_code == 0, result.output
    schedules = drifted.state.schedules
    assert set(schedules) == {"someone-elses", f"{PREFIX}daily-digest", f"{PREFIX}weekly-report"}
    assert schedules[f"{PREFIX}daily-digest"]["cron"] == "0 9 * * *"
    assert schedules[f"{PREFIX}weekly-report"]["cron"] == "CRON_TZ=Europe/Berlin 0 8 * * 1"


def test_sync_leaves_foreign_schedules_alone(app: Flask, drifted: FakeQStash) -> None:
    """A schedule without our prefix is neither updated nor deleted."""
    before = dict(drifted.state.schedules["someone-elses"])
    _sync(app)
    assert drifted.state.schedules["someone-elses"] == before
    assert not any("someone-elses" in req.path for req in drifted.requests)


def test_sync_prints_the_diff(app: Flask, drifted: FakeQStash) -> None:
    """Each schedule gets one line saying what sync does, and why."""
    lines = _sync(app).output.splitlines()
    assert f"~ update {PREFIX}daily-digest  cron: '0 8 * * *' -> '0 9 * * *'" in lines
    assert f"+ create {PREFIX}weekly-report  CRON_TZ=Europe/Berlin 0 8 * * 1  -> {WEEKLY}" in lines
    assert f"- delete {PREFIX}old-job  no @cron job declares it any more" in lines
    assert "changed 3 of 3 (done)" in lines
    assert f"left alone: 1 schedule(s) without the prefix {PREFIX!r}" in lines


def test_dry_run_changes_nothing(app: Flask, drifted: FakeQStash) -> None:
    """--dry-run prints the same diff but only reads from QStash."""
    before = {k: dict(v) for k, v in drifted.state.schedules.items()}
    result = _sync(app, "--dry-run")
    assert "would change 3 of 3 (dry run)" in result.output
    assert drifted.state.schedules == before
    assert {req.method for req in drifted.requests} == {"GET"}


def test_second_sync_is_a_no_op(app: Flask, drifted: FakeQStash) -> None:
    """Once in sync, sync finds nothing to change."""
    _sync(app)
    result = _sync(app)
    assert "changed 0 of 2 (done)" in result.output
    assert f"= unchanged {PREFIX}daily-digest" in result.output


def test_created_schedule_carries_the_jobs_options(app: Flask, drifted: FakeQStash) -> None:
    """The upsert names our schedule id, an empty JSON body and the job's options."""
    _sync(app)
    created = next(req for req in drifted.requests if req.path == f"/v2/schedules/{WEEKLY}")
    assert created.body == b"{}"
    assert created.upstash == {
        "content-type": "application/json",
        "upstash-cron": "CRON_TZ=Europe/Berlin 0 8 * * 1",
        "upstash-schedule-id": f"{PREFIX}weekly-report",
        "upstash-callback": f"{APP_URL}/api/jobs/webhook-failed",
    }


def test_cron_job_whose_schema_rejects_empty_payload_is_refused() -> None:
    """A scheduled delivery carries {}, so a schema with required fields cannot be scheduled."""

    class Strict(Schema):
        account = fields.String(required=True)

    registry = JobRegistry()
    registry.cron("nightly", cron="0 3 * * *", schema=Strict)(lambda payload, delivery: None)
    with pytest.raises(JobDefinitionError, match="rejects the payload"):
        desired_schedules(registry, APP_URL, PREFIX)


def test_queue_sync_sets_declared_parallelism(app: Flask, fake: FakeQStash) -> None:
    """A declared queue gets its parallelism; a queue nobody declares is left alone."""
    fake.state.queues["images"] = {"name": "images", "parallelism": 1, "paused": True}
    fake.state.queues["other"] = {"name": "other", "parallelism": 9, "paused": False}
    result = app.test_cli_runner().invoke(qstash, ["queues", "sync"])
    assert "~ update images  parallelism: 1 -> 3" in result.output
    assert fake.state.queues["images"] == {"name": "images", "parallelism": 3, "paused": True}
    assert fake.state.queues["other"]["parallelism"] == 9


def test_queue_sync_dry_run_changes_nothing(app: Flask, fake: FakeQStash) -> None:
    """queues sync --dry-run only reads."""
    result = app.test_cli_runner().invoke(qstash, ["queues", "sync", "--dry-run"])
    assert "+ create images  parallelism=3" in result.output
    assert fake.state.queues == {}
