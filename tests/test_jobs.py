"""The job registry: declarations are validated where they are written."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from marshmallow import Schema, fields

from app import create_app
from app.cron import parse_cron
from app.errors import JobDefinitionError
from app.jobs import Job, JobRegistry
from app.testing import DeliveryClient
from tests.conftest import TEST_CONFIG


def handler(payload: Any, delivery: Any) -> None:
    """Do nothing."""


def test_bare_decorator_names_job_after_function() -> None:
    """@job without arguments names the job after the function, kebab-cased."""
    registry = JobRegistry()

    @registry.job
    def send_welcome_email(payload: Any, delivery: Any) -> None:
        """Send the welcome email."""

    assert send_welcome_email.name == "send-welcome-email"
    assert send_welcome_email.path == "/api/jobs/send-welcome-email"
    assert send_welcome_email.description == "Send the welcome email."
    assert "send-welcome-email" in registry


def test_options_are_kept_on_the_job() -> None:
    """Declared delivery defaults are stored on the Job."""
    registry = JobRegistry()
    job = registry.job(
        "process-image", retries=2, queue="image-processing", parallelism=3, timeout="2m"
    )(handler)
    assert (job.retries, job.queue, job.parallelism, job.timeout) == (
        2,
        "image-processing",
        3,
        "2m",
    )
    assert job.url("https://api.example.com/") == "https://api.example.com/api/jobs/process-image"


def test_duplicate_name_fails_at_declaration() -> None:
    """Registering a name twice fails with the name in the message."""
    registry = JobRegistry()
    registry.job("send-email")(handler)
    with pytest.raises(JobDefinitionError, match="A job named 'send-email' is already registered"):
        registry.job("send-email")(handler)


@pytest.mark.parametrize("name", ["Send-Email", "send_email", "-x", "x-", "a--b", "a/b", ""])
def test_malformed_name_fails_at_declaration(name: str) -> None:
    """Job names must be URL-safe kebab-case."""
    registry = JobRegistry()
    with pytest.raises(JobDefinitionError, match="invalid job name"):
        registry.add(Job(name=name, handler=handler))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, "retries"),
        ({"retries": "3"}, "retries"),
        ({"parallelism": 0, "queue": "q"}, "parallelism"),
        ({"parallelism": 2}, "needs a queue"),
        ({"retires": 3}, "unknown option"),
        ({"cron": "* * * * *"}, "@cron"),
        ({"schema": dict}, "marshmallow Schema"),
    ],
)
def test_invalid_options_fail_at_declaration(options: dict[str, Any], message: str) -> None:
    """Mistyped or impossible options fail at import, not at the first delivery."""
    registry = JobRegistry()
    with pytest.raises(JobDefinitionError, match=message):
        registry.job("x", **options)(handler)


@pytest.mark.parametrize(
    "expression",
    ["0 9 * * 1-5", "7 * * * *", "CRON_TZ=Europe/Istanbul 0 8 * * 0", "*/5 * * * *"],
)
def test_valid_cron_is_accepted(expression: str) -> None:
    """QStash's cron forms, with and without CRON_TZ, are accepted."""
    registry = JobRegistry()
    job = registry.cron("digest", cron=expression)(handler)
    assert job.cron is not None and job.cron.text == expression


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 9 * *", "5 fields"),
        ("0 0 9 * * 1", "5 fields"),
        ("61 * * * *", "invalid cron"),
        ("CRON_TZ=Mars/Olympus 0 8 * * *", "unknown time zone"),
        ("", "non-empty"),
    ],
)
def test_bad_cron_fails_at_declaration(expression: str, message: str) -> None:
    """A bad cron expression fails at import with what is wrong."""
    registry = JobRegistry()
    with pytest.raises(JobDefinitionError, match=message):
        registry.cron("digest", cron=expression)(handler)


def test_cron_next_runs_honour_time_zone() -> None:
    """Next runs are computed in the CRON_TZ zone."""
    expression = parse_cron("CRON_TZ=America/New_York 0 9 * * *")
    runs = expression.next_runs(2, after=datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
    assert [r.astimezone(UTC).hour for r in runs] == [14, 14]
    assert runs[1].day == runs[0].day + 1


def test_schema_class_is_instantiated_once() -> None:
    """A schema class is turned into one reusable instance at declaration."""

    class Payload(Schema):
        name = fields.String(required=True)

    job = JobRegistry().job("x", schema=Payload)(handler)
    assert isinstance(job.schema, Payload)


def test_discovery_imports_job_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """create_app imports every module of JOBS_PACKAGES and mounts their jobs."""
    package = tmp_path / "myjobs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "greet.py").write_text(
        "from app.jobs import JobRegistry\n"
        "import tests.test_jobs as t\n"
        "@t.DISCOVERY.job('greet')\n"
        "def greet(payload, delivery):\n"
        "    return {'hello': payload['name']}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = DISCOVERY
    imported = registry.discover(["myjobs"])
    assert imported == ["myjobs", "myjobs.greet"]
    app = create_app(TEST_CONFIG, registry=registry)
    response = DeliveryClient(app).deliver("greet", {"name": "Ada"})
    assert response.get_json() == {"hello": "Ada"}
    sys.modules.pop("myjobs.greet", None)
    sys.modules.pop("myjobs", None)


def test_missing_job_package_is_a_clear_error() -> None:
    """A JOBS_PACKAGES entry that does not exist is named in the error."""
    with pytest.raises(JobDefinitionError, match="no_such_jobs"):
        JobRegistry().discover(["no_such_jobs"])


DISCOVERY = JobRegistry()
