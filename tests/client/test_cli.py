"""``flask jobs …`` and ``flask qstash …``: useful output, one clear line on every error."""

from __future__ import annotations

import pytest
from click.testing import Result
from flask import Flask

from app.cli import jobs, qstash
from tests.client.conftest import PREFIX
from tests.client.fake_qstash import FakeQStash
from tests.conftest import APP_URL
from tests.servers import free_port

EMAIL = '{"to": "a@example.com", "template": "welcome"}'


def _run(app: Flask, group: object, *args: str) -> Result:
    return app.test_cli_runner().invoke(group, list(args))  # type: ignore[arg-type]


def _one_error_line(result: Result) -> str:
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("Error: ")
    return line


def test_jobs_list_shows_url_fields_defaults_and_schedule(app: Flask) -> None:
    """Each job is listed with its URL, payload fields, defaults and cron."""
    output = _run(app, jobs, "list").output
    assert f"send-email  {APP_URL}/api/jobs/send-email" in output
    assert "payload: to (Email, required), template (String, required), data (Dict)" in output
    assert "defaults: retries=5, retry_delay=pow(2, retried) * 1000, timeout=30s" in output
    assert "defaults: queue=images, parallelism=3" in output
    assert "schedule: CRON_TZ=Europe/Berlin 0 8 * * 1" in output


def test_jobs_enqueue_prints_the_message_id(app: Flask, fake: FakeQStash) -> None:
    """jobs enqueue publishes with the given options and prints only the message id."""
    result = _run(app, jobs, "enqueue", "send-email", EMAIL, "--delay", "5m",
                  "--not-before", "2030-01-01T00:00:00", "--dedup-id", "cli-1")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.strip() in fake.state.messages
    headers = fake.last().headers
    assert (headers["upstash-delay"], headers["upstash-not-before"]) == ("5m", "1893456000")
    assert headers["upstash-deduplication-id"] == "cli-1"


def test_jobs_enqueue_accepts_seconds_as_delay(app: Flask, fake: FakeQStash) -> None:
    """A bare number of seconds is a valid --delay."""
    _run(app, jobs, "enqueue", "webhook-failed", "{}", "--delay", "90")
    assert fake.last().headers["upstash-delay"] == "90s"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-job", "{}"], "no job named 'no-such-job'"),
        (["send-email", "{not json"], "PAYLOAD is not valid JSON"),
        (["send-email", '{"to": "x"}'], "invalid payload: {"),
        (["send-email", EMAIL, "--delay", "soon"], "delay 'soon' is not a duration"),
        (["send-email", EMAIL, "--dedup-id", "a\tb"], "deduplication_id"),
    ],
)
def test_jobs_enqueue_errors_are_one_line(
    app: Flask, fake: FakeQStash, args: list[str], message: str
) -> None:
    """Bad input exits 1 with one line naming the problem, and publishes nothing."""
    assert message in _one_error_line(_run(app, jobs, "enqueue", *args))
    assert fake.requests == []


def test_bad_not_before_is_a_usage_error(app: Flask) -> None:
    """A --not-before that is not ISO-8601 is rejected by the option parser."""
    result = _run(app, jobs, "enqueue", "webhook-failed", "{}", "--not-before", "tomorrow")
    assert result.exit_code == 2
    assert "is not an ISO-8601 date-time" in result.output


def test_unreachable_qstash_is_one_line(app: Flask) -> None:
    """QStash down: one line saying so, no traceback."""
    app.config["QSTASH_URL"] = f"http://127.0.0.1:{free_port()}"
    line = _one_error_line(_run(app, qstash, "dlq", "list"))
    assert "no answer from QStash" in line


def test_qstash_refusal_is_one_line(app: Flask, fake: FakeQStash) -> None:
    """A 4xx from QStash shows its status and message."""
    fake.fail_next(403, error="token lacks permission")
    line = _one_error_line(_run(app, qstash, "schedules", "list"))
    assert line == "Error: QStash answered 403: token lacks permission"


def test_schedules_list_shows_next_three_runs(app: Flask, fake: FakeQStash) -> None:
    """Each schedule is listed as ours or foreign, with its next three firing times."""
    fake.add_schedule(f"{PREFIX}daily-digest", "https://x.example/a", "30 9 * * *")
    fake.add_schedule("theirs", "https://x.example/b", "CRON_TZ=Asia/Tokyo 0 0 1 1 *")
    output = _run(app, qstash, "schedules", "list").output
    assert f"{PREFIX}daily-digest  (ours)" in output
    assert "theirs  (foreign)" in output
    next_lines = [line for line in output.splitlines() if line.startswith("  next: ")]
    assert next_lines[0].count("T09:30+00:00") == 3
    assert next_lines[1].count("-01-01T00:00+09:00") == 3


def test_dlq_list_and_retry(app: Flask, fake: FakeQStash) -> None:
    """dlq list shows each dead message; dlq retry republishes it and prints the new id."""
    fake.state.dlq["dlq_1"] = {"dlqId": "dlq_1", "messageId": "msg_old", "responseStatus": 500,
                               "url": f"{APP_URL}/api/jobs/send-email",
                               "responseBody": "boom"}  # fmt: skip
    listed = _run(app, qstash, "dlq", "list").output
    assert f"dlq_1  500  {APP_URL}/api/jobs/send-email  (message msg_old) boom" in listed
    retried = _run(app, qstash, "dlq", "retry", "dlq_1")
    assert retried.output.strip() in fake.state.messages
    assert fake.state.dlq == {}


def test_dlq_retry_of_unknown_id_is_one_line(app: Flask, fake: FakeQStash) -> None:
    """Retrying a DLQ id that does not exist says QStash's 404 message."""
    line = _one_error_line(_run(app, qstash, "dlq", "retry", "dlq_nope"))
    assert "404" in line and "dlq message not found" in line


def test_missing_token_is_one_line(app: Flask) -> None:
    """Without QSTASH_TOKEN, QStash commands say which setting is missing."""
    app.config["QSTASH_TOKEN"] = None
    assert "QSTASH_TOKEN is not set" in _one_error_line(_run(app, qstash, "queues", "sync"))


def test_cron_schema_rejecting_empty_payload_is_one_line(app: Flask, fake: FakeQStash) -> None:
    """A cron job that could never accept its scheduled delivery stops sync with one line."""
    schema = app.extensions["qstash_jobs"]["daily-digest"].schema
    schema.load_fields["day"].required = True  # fields belong to this app's schema instance
    line = _one_error_line(_run(app, qstash, "schedules", "sync"))
    assert "cron job 'daily-digest'" in line and "rejects the payload" in line
    assert fake.requests == []


def test_enqueue_without_app_url_says_how_to_join_flask_dev(app: Flask, fake: FakeQStash) -> None:
    """With no APP_URL (a second terminal next to flask dev), the line names QSTASH_DEV=1."""
    app.config["APP_URL"] = None
    line = _one_error_line(_run(app, jobs, "enqueue", "send-email", EMAIL))
    assert line.startswith("Error: APP_URL is not set") and "export QSTASH_DEV=1" in line
    assert fake.requests == []


def test_jobs_list_without_app_url_shows_paths(app: Flask) -> None:
    """An app loaded without APP_URL (no keys needed to list) shows each job's path."""
    app.config["APP_URL"] = None
    result = _run(app, jobs, "list")
    assert result.exit_code == 0
    assert "send-email  /api/jobs/send-email" in result.output
