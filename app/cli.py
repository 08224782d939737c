"""Command groups: ``flask qstash …`` (talks to QStash) and ``flask jobs …`` (this app's jobs).

They are registered as Flask CLI plugins (``flask.commands`` entry points in
pyproject.toml) rather than on the app, so that a command which does not need a
configured app (the local dev server) runs before any signing key exists. Commands that
need the app load it themselves with ``with_appcontext``. Every expected failure (bad
input, QStash unreachable or refusing) prints one ``Error: …`` line and exits 1.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click
from flask import current_app
from flask.cli import with_appcontext
from marshmallow import ValidationError

from app.devhome import schema_fields
from app.errors import QStashJobsError
from app.publishing import client_for
from app.publishing import sync as sync_plan
from app.qstash.cron import parse_cron

if TYPE_CHECKING:
    from app.jobs import Job, JobRegistry
    from app.publishing.sync import Change
    from app.qstash.client.models import Schedule

F = TypeVar("F", bound=Callable[..., Any])


def _one_line_errors(command: F) -> F:
    """Turn the framework's and the user's errors into one ``Error:`` line, exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ValidationError as exc:
            raise click.ClickException(f"invalid payload: {json.dumps(exc.messages)}") from None
        except (QStashJobsError, ValueError) as exc:
            raise click.ClickException(str(exc).splitlines()[0]) from None

    return wrapper  # type: ignore[return-value]


def _registry() -> JobRegistry:
    registry: JobRegistry = current_app.extensions["qstash_jobs"]
    return registry


def _print_changes(changes: list[Change]) -> None:
    for change in changes:
        click.echo(change.describe())


def _print_summary(changes: list[Change], dry_run: bool) -> None:
    todo = sum(change.action != "unchanged" for change in changes)
    verb = "would change" if dry_run else "changed"
    click.echo(f"{verb} {todo} of {len(changes)} ({'dry run' if dry_run else 'done'})")


@click.group("qstash")
def qstash() -> None:
    """Talk to QStash (or the local dev server): schedules, queues, DLQ."""


@qstash.group("schedules")
def schedules() -> None:
    """Schedules as code: the @cron declarations are the source of truth."""


@schedules.command("sync")
@click.option("--dry-run", is_flag=True, help="Print the diff without changing anything.")
@with_appcontext
@_one_line_errors
def schedules_sync(dry_run: bool) -> None:
    """Create, update and delete our schedules so QStash matches the @cron jobs."""
    config = current_app.config
    prefix = config["QSTASH_SCHEDULE_PREFIX"]
    if not config.get("APP_URL"):
        raise click.ClickException("APP_URL is not set: schedules need the public URL")
    desired = sync_plan.desired_schedules(_registry(), config["APP_URL"], prefix)
    client = client_for(current_app)
    existing = client.list_schedules()
    changes = sync_plan.plan_schedules(desired, existing, prefix)
    _print_changes(changes)
    if not dry_run:
        sync_plan.apply_schedules(client, changes)
    _print_summary(changes, dry_run)
    foreign = sync_plan.foreign_schedules(existing, prefix)
    if foreign:
        click.echo(f"left alone: {len(foreign)} schedule(s) without the prefix {prefix!r}")


@schedules.command("list")
@with_appcontext
@_one_line_errors
def schedules_list() -> None:
    """List QStash's schedules with their next three run times."""
    prefix = current_app.config["QSTASH_SCHEDULE_PREFIX"]
    found = client_for(current_app).list_schedules()
    for schedule in sorted(found, key=lambda s: s.schedule_id):
        owner = "ours" if schedule.schedule_id.startswith(prefix) else "foreign"
        paused = ", paused" if schedule.paused else ""
        click.echo(f"{schedule.schedule_id}  ({owner}{paused})")
        click.echo(f"  cron: {schedule.cron}  -> {schedule.destination}")
        click.echo(f"  next: {_next_runs(schedule)}")
    if not found:
        click.echo("no schedules")


def _next_runs(schedule: Schedule) -> str:
    try:
        runs = parse_cron(schedule.cron).next_runs(3)
    except QStashJobsError:
        return "? (this cron expression is not understood locally)"
    return ", ".join(run.isoformat(timespec="minutes") for run in runs)


@qstash.group("queues")
def queues() -> None:
    """Queues as code: the queue and parallelism each job declares."""


@queues.command("sync")
@click.option("--dry-run", is_flag=True, help="Print the diff without changing anything.")
@with_appcontext
@_one_line_errors
def queues_sync(dry_run: bool) -> None:
    """Create or update the queues jobs declare (undeclared queues are left alone)."""
    client = client_for(current_app)
    desired = sync_plan.desired_queues(_registry())
    changes = sync_plan.plan_queues(desired, client.list_queues())
    _print_changes(changes)
    if not dry_run:
        sync_plan.apply_queues(client, changes)
    _print_summary(changes, dry_run)


@qstash.group("dlq")
def dlq() -> None:
    """The dead-letter queue: messages whose retries ran out."""


@dlq.command("list")
@click.option("--count", type=click.IntRange(1, 100), default=100, help="At most this many.")
@with_appcontext
@_one_line_errors
def dlq_list(count: int) -> None:
    """List the messages in the DLQ with the last answer their endpoint gave."""
    page = client_for(current_app).list_dlq(count=count)
    for message in page.messages:
        body = (message.response_body or "").replace("\n", " ")[:80]
        click.echo(
            f"{message.dlq_id}  {message.response_status or '-'}  {message.url}"
            f"  (message {message.message_id}) {body}".rstrip()
        )
    if not page.messages:
        click.echo("the DLQ is empty")
    elif page.cursor:
        click.echo(f"more messages follow (cursor {page.cursor})")


@dlq.command("retry")
@click.argument("dlq_id")
@with_appcontext
@_one_line_errors
def dlq_retry(dlq_id: str) -> None:
    """Publish a DLQ message again and print the new message id."""
    click.echo(client_for(current_app).retry_dlq(dlq_id).message_id)


@click.group("jobs")
def jobs() -> None:
    """Inspect and enqueue this app's jobs."""


@jobs.command("list")
@with_appcontext
def jobs_list() -> None:
    """List every job: name, URL, payload fields, defaults and schedule."""
    app_url = current_app.config.get("APP_URL") or ""
    for job in _registry():
        click.echo(f"{job.name}  {job.url(app_url) if app_url else job.path}")
        if job.description:
            click.echo(f"  {job.description}")
        click.echo(f"  payload: {schema_fields(job)}")
        click.echo(f"  defaults: {_defaults(job)}")
        if job.cron is not None:
            click.echo(f"  schedule: {job.cron.text}")


def _defaults(job: Job) -> str:
    names = ("retries", "retry_delay", "queue", "parallelism", "timeout", "callback")
    parts = [f"{n}={getattr(job, n)}" for n in (*names, "failure_callback")]
    shown = [part for part in parts if not part.endswith("=None")]
    return ", ".join(shown) or "QStash's (3 retries, exponential backoff)"


def _not_before(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO-8601 date-time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@jobs.command("enqueue")
@click.argument("name")
@click.argument("payload", default="null")
@click.option("--delay", help="Deliver after this long: seconds or '1d10h30m'.")
@click.option("--not-before", help="Deliver at/after this ISO-8601 time (UTC if no zone).")
@click.option("--dedup-id", help="Deduplication id: a second publish with it is dropped.")
@with_appcontext
@_one_line_errors
def jobs_enqueue(
    name: str, payload: str, delay: str | None, not_before: str | None, dedup_id: str | None
) -> None:
    """Validate PAYLOAD (JSON) with job NAME's schema, publish it, print the message id."""
    registry = _registry()
    if name not in registry:
        known = ", ".join(job.name for job in registry) or "none"
        raise click.ClickException(f"no job named {name!r} (jobs: {known})")
    if not current_app.config.get("APP_URL"):
        raise click.ClickException(
            "APP_URL is not set: a job's URL is APP_URL + /api/jobs/NAME (next to a running"
            " `flask dev`, export QSTASH_DEV=1 first, as its banner says)"
        )
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise click.ClickException(f"PAYLOAD is not valid JSON: {exc}") from None
    options: dict[str, Any] = {"delay": delay, "deduplication_id": dedup_id}
    options["not_before"] = _not_before(not_before)
    options = {key: value for key, value in options.items() if value is not None}
    if isinstance(delay, str) and delay.isdigit():
        options["delay"] = int(delay)
    click.echo(registry[name].enqueue(data, **options))


# The dev server needs no configured app, so it hangs off the plugin group directly.
from app.devserver.cli import dev_server  # noqa: E402

qstash.add_command(dev_server)
