"""The scheduled jobs: ``daily-digest``, ``weekly-report`` and ``check-expiries``.

QStash fires them (``flask qstash schedules sync`` creates the schedules) with the body
``{}``. Schedules made elsewhere keep working: fields a cron job does not read (the seed's
``{"type": "digest"}``) are ignored, JSON ``null`` counts as ``{}`` and so does an empty
body (a schedule created without one; the receiver loads it as ``{}``); only a mistyped
``at`` or a body that is no JSON object is refused.

A delivery works out which firing it belongs to: the last time the job's cron expression
matched, at or before the message's first attempt (from the delivery log, so a retry
arriving after the next firing still counts as its own), else at or before now. A
redelivery of that firing, even hours later, covers the same window and publishes the same
deduplication ids: the admins get one email per firing. The duplicate guard also skips a
redelivered message that already completed.

* ``daily-digest`` mails ``ADMIN_EMAILS`` the failed attempts since the previous firing's
  day (on Monday: Friday to Sunday), by job, with the latest failures of each.
* ``weekly-report`` mails per-job deliveries, failures, failure rate, p50 and p95.
* ``check-expiries`` deletes log rows and finished claims past ``DELIVERY_LOG_RETENTION_DAYS``
  / ``CLAIM_RETENTION_DAYS``, and outbox ``.eml`` files older than the log retention.

The two reports read the delivery log; without one (``get_store`` is None or the log is
off) they send nothing and say why in their result.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from cronsim import CronSim
from flask import current_app
from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validates
from sqlalchemy import Engine

from app.delivery import Delivery
from app.jobs import Job, cron
from app.mail import outbox_folder
from app.store import Store, get_store, queries
from app.workflows import state as workflow_state
from jobs.email import send_email

#: The latest failures listed per job in the digest (the count is always exact).
FAILURES_PER_JOB = 5
#: Longer error texts are cut in the digest.
ERROR_CHARS = 300
_DAY = timedelta(days=1)


def now() -> datetime:
    """Return the current time, aware (tests replace this to pick a firing)."""
    return datetime.now(UTC)


class SchedulePayload(Schema):
    """What a QStash schedule sends: ``{}``, ``null``, or fields a cron job does not read."""

    class Meta:
        unknown = EXCLUDE

    @pre_load
    def _null_is_empty(self, data: Any, **kwargs: Any) -> Any:
        return {} if data is None else data


class ReportPayload(SchedulePayload):
    """A schedule's ``{}``, or ``{"at": …}`` to replay the firing due at that time."""

    at = fields.AwareDateTime(load_default=None)

    @validates("at")
    def _not_future(self, value: datetime | None, **kwargs: Any) -> None:
        if value is not None and value > now():
            raise ValidationError("must not be in the future")


class ExpiryPayload(SchedulePayload):
    """A schedule's ``{}``: expiry always works from the current time."""


def firing(job: Job, at: datetime) -> datetime:
    """Return the last time ``job``'s cron expression matched at or before ``at``."""
    assert job.cron is not None
    start = at.astimezone(job.cron.zone).replace(microsecond=0) + timedelta(seconds=1)
    return next(CronSim(job.cron.fields, start, reverse=True))


def report_window(job: Job, fired: datetime) -> tuple[date, date]:
    """Return the days [since, until) a report fired at ``fired`` covers.

    From the day of the previous firing to the day of this one: yesterday for a daily
    job, Friday to Sunday for a weekday job on Monday, the past seven days for a weekly one.
    """
    assert job.cron is not None
    previous = next(CronSim(job.cron.fields, fired, reverse=True))
    return previous.date(), fired.date()


def _epoch_ms(day: date, job: Job) -> int:
    assert job.cron is not None
    return int(datetime(day.year, day.month, day.day, tzinfo=job.cron.zone).timestamp() * 1000)


def dedup_id(job: Job, fired: datetime, recipient: str) -> str:
    """Return the deduplication id of ``job``'s email to ``recipient`` for one firing."""
    digest = hashlib.sha256(recipient.strip().lower().encode()).hexdigest()[:16]
    return f"{job.name}-{fired.astimezone(UTC):%Y%m%dT%H%MZ}-{digest}"


def _skip_reason() -> str | None:
    if not current_app.config["ADMIN_EMAILS"]:
        return "ADMIN_EMAILS is empty: nobody to send to"
    store = get_store(current_app)
    if store is None or store.log is None:
        return "the delivery log is off (DELIVERY_LOG): nothing to report"
    return None


def _greeted(recipient: str) -> str:
    """Return the name to greet ``recipient`` by: its display name, else its local part."""
    name, address = parseaddr(recipient)
    return name or address.partition("@")[0] or recipient


def _mail_admins(job: Job, template: str, fired: datetime, data: dict[str, Any]) -> list[str]:
    admins = list(dict.fromkeys(current_app.config["ADMIN_EMAILS"]))
    payloads = [
        {"to": admin, "template": template, "data": {"name": _greeted(admin), **data}}
        for admin in admins
    ]
    ids = [dedup_id(job, fired, admin) for admin in admins]
    return send_email.enqueue_many(payloads, deduplication_ids=ids)


def first_attempt(store: Store | None, job: Job, delivery: Delivery) -> datetime | None:
    """Return when this message was first delivered, if this is a retry and the log knows.

    The caller flushes the store first: the first attempt may sit in this process's buffer.
    """
    if not delivery.retried or delivery.message_id is None or store is None or not store.log:
        return None
    with store.read() as conn:
        first = queries.first_attempt_ms(conn, job.name, delivery.message_id)
    return None if first is None else datetime.fromtimestamp(first / 1000, UTC)


def _report(
    job: Job, payload: dict[str, Any], delivery: Delivery, template: str, build: Any
) -> dict[str, Any]:
    store = get_store(current_app)
    if store is not None and store.log is not None:
        store.flush()  # this process's buffered rows: the first attempt's and the window's
    fired = firing(job, payload["at"] or first_attempt(store, job, delivery) or now())
    since, until = report_window(job, fired)
    result: dict[str, Any] = {"firing": fired.isoformat(), "since": since.isoformat()}
    reason = _skip_reason()
    if reason is not None:
        current_app.logger.warning("%s: not sent: %s", job.name, reason)
        return {**result, "sent": 0, "skipped": reason}
    assert store is not None
    with store.read() as conn:
        jobs = build(conn, _epoch_ms(since, job), _epoch_ms(until, job))
    data = {"since": since.isoformat(), "until": (until - _DAY).isoformat(), "jobs": jobs}
    ids = _mail_admins(job, template, fired, data)
    return {**result, "sent": len(ids), "messageIds": ids}


def _failure(item: queries.Failure) -> dict[str, Any]:
    error = item.error if item.error is None else item.error[:ERROR_CHARS]
    return {
        "at": datetime.fromtimestamp(item.at_ms / 1000, UTC).isoformat(),
        "messageId": item.message_id,
        "attempt": item.retried + 1,
        "status": item.status,
        "error": error,
        "dlqId": item.dlq_id,
    }


def digest_jobs(conn: Any, since_ms: int, until_ms: int) -> list[dict[str, Any]]:
    """Return the digest's failures by job in [since, until), most failures first."""
    stats = [s for s in queries.job_stats(conn, since_ms, until_ms) if s.failures]
    stats.sort(key=lambda s: (-s.failures, s.job))
    return [
        {
            "job": s.job,
            "failures": s.failures,
            "attempts": s.total,
            "latest": [
                _failure(f)
                for f in queries.latest_failures(
                    conn, FAILURES_PER_JOB, since_ms, until_ms, job=s.job
                )
            ],
        }
        for s in stats
    ]


def weekly_jobs(conn: Any, since_ms: int, until_ms: int) -> list[dict[str, Any]]:
    """Return the weekly report's per-job counts and durations in [since, until)."""
    return [
        {
            "job": s.job,
            "total": s.total,
            "failures": s.failures,
            "failureRate": s.failure_rate,
            "p50Ms": s.p50_ms,
            "p95Ms": s.p95_ms,
        }
        for s in queries.job_stats(conn, since_ms, until_ms)
    ]


@cron("daily-digest", cron="0 9 * * 1-5", schema=ReportPayload, retries=3)
def daily_digest(payload: dict[str, Any], delivery: Delivery) -> dict[str, Any]:
    """Email the admins the failed deliveries since the previous digest, by job."""
    return _report(daily_digest, payload, delivery, "daily_digest", digest_jobs)


@cron("weekly-report", cron="0 8 * * 0", schema=ReportPayload, retries=3)
def weekly_report(payload: dict[str, Any], delivery: Delivery) -> dict[str, Any]:
    """Email the admins per-job deliveries, failure rate and p50/p95 for the past week."""
    return _report(weekly_report, payload, delivery, "weekly_report", weekly_jobs)


def expire_outbox(folder: Path, cutoff: float) -> int:
    """Delete the ``.eml`` files (and stale temporary files) last written before ``cutoff``."""
    if not folder.is_dir():
        return 0
    deleted = 0
    for path in [*folder.glob("*.eml"), *folder.glob(".tmp-*")]:
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_mtime >= cutoff:
                continue
            path.unlink()
        except FileNotFoundError:
            continue  # another worker expired it first
        deleted += 1
    return deleted


@cron("check-expiries", cron="7 * * * *", schema=ExpiryPayload, retries=2)
def check_expiries(payload: dict[str, Any], delivery: Delivery) -> dict[str, Any]:
    """Delete log rows, finished claims, outbox emails and workflow runs past their retention."""
    config = current_app.config
    log_days = float(config["DELIVERY_LOG_RETENTION_DAYS"])
    now_ms = int(now().timestamp() * 1000)
    rows = claims = runs = 0
    store = get_store(current_app)
    if store is not None:
        with store.engine.begin() as conn:
            rows, claims = queries.expire(
                conn, now_ms, log_days=log_days, claim_days=float(config["CLAIM_RETENTION_DAYS"])
            )
        runs = expire_workflow_runs(store.engine, now_ms)
    files = expire_outbox(outbox_folder(current_app), now_ms / 1000 - log_days * 86_400)
    return {"rows": rows, "claims": claims, "files": files, "runs": runs}


#: Finished workflow runs deleted per check-expiries delivery at most (in pages of 1,000).
WORKFLOW_EXPIRY_LIMIT = 20_000


def expire_workflow_runs(engine: Engine, now_ms: int) -> int:
    """Delete finished workflow runs and notified events past their retention."""
    config = current_app.config
    runs_before = now_ms - int(float(config["WORKFLOW_RETENTION_DAYS"]) * 86_400_000)
    events_before = now_ms - int(float(config["WORKFLOW_EVENT_RETENTION_DAYS"]) * 86_400_000)
    deleted = 0
    while deleted < WORKFLOW_EXPIRY_LIMIT:
        page = workflow_state.expire(engine, runs_before, events_before_ms=events_before)
        deleted += page
        if page < 1000:
            break
    return deleted
