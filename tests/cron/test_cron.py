"""The cron jobs end to end: a firing's delivery, through the stub queue, into the outbox."""

from __future__ import annotations

import email
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app.cli import qstash
from app.store import Store, queries
from app.store.queries import DAY_MS
from app.testing import DeliveryClient, Published, StubQueue
from jobs.cron import check_expiries, daily_digest, weekly_report
from jobs.email import send_email
from tests.client.fake_qstash import TOKEN, running
from tests.cron.conftest import ADMINS, insert_claim, insert_rows, row

Clock = Callable[[datetime], None]
TUESDAY_9 = datetime(2026, 11, 24, 9, 0, 5, tzinfo=UTC)
MONDAY_MS = int(datetime(2026, 11, 23, tzinfo=UTC).timestamp() * 1000)
HOUR_MS = 3_600_000


def _fire(app: Flask, queue: StubQueue, job: Any) -> list[Published]:
    """Publish a schedule's ``{}`` to ``job``, drain, and return the emails it sent."""
    with app.app_context():
        job.enqueue({})
    queue.drain(fail_fast=True)
    return queue.published("send-email")


def _eml(outbox: Path, message_id: str) -> Message:
    return email.message_from_bytes((outbox / f"{message_id}.eml").read_bytes())


def _part(message: Message, subtype: str) -> str:
    for part in message.walk():
        if part.get_content_type() == f"text/{subtype}":
            return str(part.get_payload(decode=True).decode())  # type: ignore[union-attr]
    raise AssertionError(f"no text/{subtype} part")


def _seed_monday(store: Store) -> None:
    insert_rows(
        store,
        [
            *(row("deliver-webhook", MONDAY_MS + HOUR_MS + n, outcome="error") for n in range(3)),
            row("deliver-webhook", MONDAY_MS + 2 * HOUR_MS),
            row("send-email", MONDAY_MS + 3 * HOUR_MS, outcome="retry", error="<b>timeout</b>"),
            row("send-email", MONDAY_MS + 4 * HOUR_MS, outcome="busy", guard="busy"),
            row("process-image", MONDAY_MS - 1, outcome="error"),
            row("process-image", MONDAY_MS + DAY_MS, outcome="error"),
        ],
    )


def test_digest_mails_each_admin_the_previous_days_failures(
    app: Flask, store: Store, queue: StubQueue, clock: Clock, tmp_path: Path
) -> None:
    """Tuesday's digest sends one email per admin listing Monday's failed attempts by job."""
    _seed_monday(store)
    clock(TUESDAY_9)
    emails = _fire(app, queue, daily_digest)
    assert sorted(m.payload["to"] for m in emails) == ADMINS
    data = emails[0].payload["data"]
    assert (data["since"], data["until"]) == ("2026-11-23", "2026-11-23")
    summary = [(j["job"], j["failures"], j["attempts"], len(j["latest"])) for j in data["jobs"]]
    assert summary == [("deliver-webhook", 3, 4, 3), ("send-email", 1, 2, 1)]
    assert all(m.state == "delivered" for m in emails)
    text = _part(_eml(tmp_path / "outbox", emails[0].message_id), "plain")
    assert "== deliver-webhook: 3 failed of 4 attempts" in text


def test_admins_are_greeted_by_display_name_else_local_part(
    make_app: Callable[..., Flask], clock: Clock, tmp_path: Path
) -> None:
    """``Ops Team <ops@…>`` in ADMIN_EMAILS is mailed at that address and greeted by name."""
    app = make_app(ADMIN_EMAILS=["Ops Team <ops@example.com>", "grace@example.com"])
    queue = StubQueue.install(app)
    clock(TUESDAY_9)
    greetings = {}
    for sent in _fire(app, queue, daily_digest):
        assert sent.state == "delivered"
        message = _eml(tmp_path / "outbox", sent.message_id)
        greetings[message["To"]] = _part(message, "plain").splitlines()[0]
    assert greetings == {
        "Ops Team <ops@example.com>": "Hi Ops Team,",
        "grace@example.com": "Hi grace,",
    }


def test_digest_escapes_error_text_in_html(
    app: Flask, store: Store, queue: StubQueue, clock: Clock, tmp_path: Path
) -> None:
    """An error message is data: the HTML part shows it escaped, never as markup."""
    _seed_monday(store)
    clock(TUESDAY_9)
    [first, _] = _fire(app, queue, daily_digest)
    html = _part(_eml(tmp_path / "outbox", first.message_id), "html")
    assert "&lt;b&gt;timeout&lt;/b&gt;" in html
    assert "<b>timeout</b>" not in html


def test_monday_digest_covers_friday_to_sunday(
    app: Flask, store: Store, queue: StubQueue, clock: Clock
) -> None:
    """The weekday digest on Monday covers the days since Friday's firing, weekend included."""
    saturday = int(datetime(2026, 11, 28, 12, tzinfo=UTC).timestamp() * 1000)
    thursday = int(datetime(2026, 11, 26, 12, tzinfo=UTC).timestamp() * 1000)
    insert_rows(store, [row("send-email", saturday, outcome="error"),
                        row("send-email", thursday, outcome="error")])  # fmt: skip
    clock(datetime(2026, 11, 30, 9, 1, tzinfo=UTC))
    data = _fire(app, queue, daily_digest)[0].payload["data"]
    assert (data["since"], data["until"]) == ("2026-11-27", "2026-11-29")
    assert [(j["job"], j["failures"]) for j in data["jobs"]] == [("send-email", 1)]


def test_redelivered_firing_does_not_mail_twice(
    app: Flask, store: Store, queue: StubQueue, clock: Clock
) -> None:
    """A second message for the same firing, hours later, publishes deduplicated emails only."""
    _seed_monday(store)
    clock(TUESDAY_9)
    _fire(app, queue, daily_digest)
    clock(TUESDAY_9.replace(hour=14))
    emails = _fire(app, queue, daily_digest)
    assert len(emails) == len(ADMINS)
    assert len({m.options.deduplication_id for m in emails}) == len(ADMINS)


def test_redelivered_message_id_does_not_rerun(
    app: Flask, store: Store, queue: StubQueue, clock: Clock
) -> None:
    """The duplicate guard answers a completed firing's message id without running it again."""
    client = DeliveryClient(app)
    clock(TUESDAY_9)
    assert client.deliver("daily-digest", {}, message_id="msg_firing_1").status_code == 200
    clock(datetime(2026, 11, 25, 9, 0, 5, tzinfo=UTC))  # would be another firing's emails
    assert client.deliver("daily-digest", {}, message_id="msg_firing_1").status_code == 200
    assert len(queue.published("send-email")) == len(ADMINS)


def test_next_firing_mails_again(app: Flask, store: Store, queue: StubQueue, clock: Clock) -> None:
    """Deduplication is per firing: the next day's digest is sent."""
    clock(TUESDAY_9)
    _fire(app, queue, daily_digest)
    clock(datetime(2026, 11, 25, 9, 0, 5, tzinfo=UTC))
    assert len(_fire(app, queue, daily_digest)) == 2 * len(ADMINS)


def test_digest_without_a_log_sends_nothing(make_app: Callable[..., Flask], clock: Clock) -> None:
    """With the log and guard off there is no store: the digest says so and sends nothing."""
    app = make_app(DELIVERY_LOG=False, DUPLICATE_GUARD=False)
    queue = StubQueue.install(app)
    clock(TUESDAY_9)
    response = DeliveryClient(app).deliver("daily-digest", {})
    assert response.status_code == 200
    assert "DELIVERY_LOG" in response.get_json()["skipped"]
    assert queue.published("send-email") == []


def test_digest_without_admins_sends_nothing(make_app: Callable[..., Flask], clock: Clock) -> None:
    """An empty ADMIN_EMAILS publishes no email and says why."""
    app = make_app(ADMIN_EMAILS=[])
    queue = StubQueue.install(app)
    clock(TUESDAY_9)
    response = DeliveryClient(app).deliver("daily-digest", {})
    assert "ADMIN_EMAILS" in response.get_json()["skipped"]
    assert queue.published() == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"at":"2999-01-01T00:00:00+00:00"}',
        b'{"at":"2026-11-24T09:00:00"}',
        b'{"at":"yesterday"}',
        b'{"type":"digest","at":1732438800}',
        b'"digest"',
        b"[]",
    ],
)
@pytest.mark.parametrize("job", ["daily-digest", "weekly-report"])
def test_bad_report_payload_is_refused(
    app: Flask, queue: StubQueue, clock: Clock, job: str, body: bytes
) -> None:
    """A future, naive or unreadable ``at``, or a body that is no object, is a 489."""
    clock(TUESDAY_9)
    response = DeliveryClient(app).deliver(job, body=body)
    assert response.status_code == 489
    assert response.get_json()["code"] == "invalid_payload"
    assert queue.published() == []


@pytest.mark.parametrize(
    "body",
    [b'{"type":"digest"}', b'{"x":1,"nested":{"a":[1,2]}}', b"null", b" {} ", b""],
    ids=["seed-type", "extra-fields", "null", "spaced", "empty"],
)
@pytest.mark.parametrize("job", ["daily-digest", "weekly-report", "check-expiries"])
def test_schedule_bodies_run_the_job(
    app: Flask, queue: StubQueue, clock: Clock, job: str, body: bytes
) -> None:
    """What QStash schedules send (extra fields, null, nothing) runs the job as ``{}`` does."""
    clock(TUESDAY_9)
    client = DeliveryClient(app)
    expected = client.deliver(job, body=b"{}", message_id="msg_plain").get_json()
    response = client.deliver(job, body=body, message_id="msg_schedule")
    assert response.status_code == 200, response.get_json()
    if job == "check-expiries":
        assert response.get_json() == expected
    else:
        assert response.get_json()["firing"] == expected["firing"]
        assert response.get_json()["sent"] == len(ADMINS)


def test_weekly_report_counts_failure_rate_and_percentiles(
    app: Flask, store: Store, queue: StubQueue, clock: Clock, tmp_path: Path
) -> None:
    """Sunday's report covers the seven days before it with per-job counts, p50 and p95."""
    start = int(datetime(2026, 11, 22, tzinfo=UTC).timestamp() * 1000)
    emails = [row("send-email", start + n * HOUR_MS, duration_ms=float(n + 1)) for n in range(18)]
    emails += [row("send-email", start + 7 * DAY_MS - 1, outcome="error", duration_ms=v)
               for v in (19.0, 20.0)]  # fmt: skip
    images = [row("process-image", start + DAY_MS, duration_ms=v) for v in (100.0, 200.0, 300.0)]
    images.append(row("process-image", start + DAY_MS, outcome="error", duration_ms=400.0))
    outside = [row("send-email", start - 1), row("send-email", start + 7 * DAY_MS)]
    insert_rows(store, emails + images + outside)
    clock(datetime(2026, 11, 29, 8, 0, 30, tzinfo=UTC))
    [report, _] = _fire(app, queue, weekly_report)
    data = report.payload["data"]
    assert (data["since"], data["until"]) == ("2026-11-22", "2026-11-28")
    assert data["jobs"] == [
        {"job": "process-image", "total": 4, "failures": 1, "failureRate": 0.25,
         "p50Ms": 250.0, "p95Ms": pytest.approx(385.0)},
        {"job": "send-email", "total": 20, "failures": 2, "failureRate": 0.1,
         "p50Ms": 10.5, "p95Ms": pytest.approx(19.05)},
    ]  # fmt: skip
    text = _part(_eml(tmp_path / "outbox", report.message_id), "plain")
    assert "send-email: 20 deliveries, 2 failed (10.0%), p50 10 ms, p95 19 ms" in text


def test_check_expiries_deletes_only_what_is_past_retention(
    app: Flask, store: Store, tmp_path: Path
) -> None:
    """Rows past 30 days, claims finished or abandoned past 14 days, .eml files past 30 go."""
    now_ms = int(time.time() * 1000)
    insert_rows(store, [row("send-email", now_ms - 31 * DAY_MS, message_id="old"),
                        row("send-email", now_ms - 29 * DAY_MS, message_id="new")])  # fmt: skip
    insert_claim(store, "done-old", state="done", at_ms=now_ms - 15 * DAY_MS)
    insert_claim(store, "done-new", state="done", at_ms=now_ms - 13 * DAY_MS)
    insert_claim(store, "crashed-old", state="running", at_ms=now_ms - 15 * DAY_MS)
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    for name, days in [("old.eml", 31), ("new.eml", 29), ("notes.txt", 31)]:
        (outbox / name).write_text("x")
        age = time.time() - days * 86_400
        os.utime(outbox / name, (age, age))
    response = DeliveryClient(app).deliver("check-expiries", {})
    assert response.get_json() == {"rows": 1, "claims": 2, "files": 1, "runs": 0}
    with store.read() as conn:
        assert [f.message_id for f in queries.latest_failures(conn)] == []
        left = {r.message_id for r in conn.execute(queries.select(queries.deliveries))}
        kept = {r.message_id for r in conn.execute(queries.select(queries.claims))}
    assert "old" not in left and "new" in left
    assert {"done-old", "crashed-old"}.isdisjoint(kept) and "done-new" in kept
    assert sorted(p.name for p in outbox.iterdir()) == ["new.eml", "notes.txt"]


def test_check_expiries_twice_is_harmless(app: Flask, store: Store) -> None:
    """A redelivered expiry firing finds nothing more to delete."""
    insert_rows(store, [row("send-email", int(time.time() * 1000) - 40 * DAY_MS)])
    client = DeliveryClient(app)
    assert client.deliver("check-expiries", {}, message_id="a").get_json()["rows"] == 1
    assert client.deliver("check-expiries", {}, message_id="b").get_json()["rows"] == 0


def test_check_expiries_without_a_store_still_cleans_the_outbox(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    """With no store, only outbox files are expired, and the job succeeds."""
    app = make_app(DELIVERY_LOG=False, DUPLICATE_GUARD=False)
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "old.eml").write_text("x")
    age = time.time() - 31 * 86_400
    os.utime(outbox / "old.eml", (age, age))
    response = DeliveryClient(app).deliver("check-expiries", {})
    assert response.get_json() == {"rows": 0, "claims": 0, "files": 1, "runs": 0}


def test_enqueue_many_needs_one_deduplication_id_per_payload(app: Flask) -> None:
    """Mismatched deduplication_ids are refused before anything is published."""
    queue = StubQueue.install(app)
    payload = {"to": "a@example.com", "template": "welcome",
               "data": {"name": "A", "loginUrl": "https://example.com/login"}}  # fmt: skip
    with app.app_context(), pytest.raises(ValueError, match="one id per payload"):
        send_email.enqueue_many([payload, payload], deduplication_ids=["only-one"])
    assert queue.published() == []


def test_schedules_sync_dry_run_lists_the_three_cron_jobs(
    make_app: Callable[..., Flask],
) -> None:
    """`flask qstash schedules sync --dry-run` would create the three schedules."""
    with running() as fake:
        app = make_app(QSTASH_URL=fake.url, QSTASH_TOKEN=TOKEN)
        result = app.test_cli_runner().invoke(qstash, ["schedules", "sync", "--dry-run"])
    assert result.exit_code == 0, result.output
    for job in (daily_digest, weekly_report, check_expiries):
        assert f"+ create qstash-jobs-{job.name}" in result.output
    assert "would change 3 of 3 (dry run)" in result.output


def test_digest_subject_counts_failures_and_greets_the_admin(
    app: Flask, store: Store, queue: StubQueue, clock: Clock, tmp_path: Path
) -> None:
    """The subject states the failure count and day; the body greets the address's name."""
    _seed_monday(store)
    clock(TUESDAY_9)
    first = _fire(app, queue, daily_digest)[0]
    message = _eml(tmp_path / "outbox", first.message_id)
    assert message["Subject"] == "[QStash Jobs] 4 failed attempts on November 23, 2026"
    assert _part(message, "plain").startswith(f"Hi {first.payload['to'].partition('@')[0]},")


def test_redelivered_weekly_firing_does_not_mail_twice(
    app: Flask, store: Store, queue: StubQueue, clock: Clock
) -> None:
    """The weekly report, fired twice for the same Sunday, is mailed once per admin."""
    clock(datetime(2026, 11, 29, 8, 0, 30, tzinfo=UTC))
    _fire(app, queue, weekly_report)
    clock(datetime(2026, 11, 29, 20, tzinfo=UTC))
    assert len(_fire(app, queue, weekly_report)) == len(ADMINS)


def test_at_replays_an_earlier_firing(
    app: Flask, store: Store, queue: StubQueue, clock: Clock
) -> None:
    """``{"at": …}`` reports on the firing due then, not on the latest one."""
    _seed_monday(store)
    clock(datetime(2026, 11, 27, 12, tzinfo=UTC))
    with app.app_context():
        daily_digest.enqueue({"at": "2026-11-24T10:30:00+00:00"})
    queue.drain(fail_fast=True)
    data = queue.published("send-email")[0].payload["data"]
    assert (data["since"], data["until"]) == ("2026-11-23", "2026-11-23")
    assert data["jobs"][0]["job"] == "deliver-webhook"


def test_retry_after_the_next_firing_still_reports_its_own_firing(
    app: Flask, store: Store, queue: StubQueue, clock: Clock
) -> None:
    """A firing's message retried past the next firing keeps the window of its first attempt.

    Tuesday's digest fails (its first attempt is logged), QStash retries it on Wednesday
    after 09:00: the retry still mails Monday's failures, under Tuesday's dedup ids.
    """
    _seed_monday(store)
    insert_rows(store, [row("daily-digest", int(TUESDAY_9.timestamp() * 1000),
                            outcome="retry", message_id="msg_tuesday")])  # fmt: skip
    clock(datetime(2026, 11, 25, 9, 30, tzinfo=UTC))
    client = DeliveryClient(app)
    answer = client.deliver("daily-digest", {}, message_id="msg_tuesday", retried=1)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["firing"] == "2026-11-24T09:00:00+00:00"
    queue.drain(fail_fast=True)
    emails = queue.published("send-email")
    assert emails[0].payload["data"]["since"] == "2026-11-23"
    assert all("-20261124T0900Z-" in m.options.deduplication_id for m in emails)


def test_first_delivery_reports_the_firing_before_now(
    app: Flask, store: Store, queue: StubQueue, clock: Clock
) -> None:
    """Without a logged earlier attempt the firing is the last one at or before now."""
    clock(datetime(2026, 11, 25, 9, 30, tzinfo=UTC))
    answer = DeliveryClient(app).deliver("daily-digest", {}, message_id="msg_new", retried=1)
    assert answer.get_json()["firing"] == "2026-11-25T09:00:00+00:00"
