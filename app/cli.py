"""Command groups: ``flask qstash …`` (talks to QStash), ``flask jobs …`` (this app's jobs)
and ``flask workflows …`` (its workflow runs and events).

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
from dataclasses import replace
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
from app.workflows import (
    Run,
    UnknownRun,
    Workflow,
    cancel,
    list_runs,
    notify,
    resume,
)
from app.workflows.context import check_event_id
from app.workflows.display import abbreviate, at, duration, step_views
from app.workflows.engine import store_engine
from app.workflows.state import FINISHED, LIVE, step_page, summary

if TYPE_CHECKING:
    from app.jobs import Job, JobRegistry
    from app.publishing.sync import Change
    from app.qstash.client.models import Schedule

F = TypeVar("F", bound=Callable[..., Any])

#: Every state a workflow run can be in.
RUN_STATES = (*LIVE, *FINISHED)


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
        kind = "  (workflow: flask workflows --help)" if isinstance(job, Workflow) else ""
        click.echo(f"{job.name}  {job.url(app_url) if app_url else job.path}{kind}")
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


@click.group("workflows")
def workflows() -> None:
    """Start, list, inspect, cancel and resume workflow runs; notify events."""


def _workflow(name: str) -> Workflow:
    registry = _registry()
    found = registry[name] if name in registry else None
    if not isinstance(found, Workflow):
        declared = ", ".join(job.name for job in registry if isinstance(job, Workflow))
        raise click.ClickException(f"no workflow named {name!r} (workflows: {declared or 'none'})")
    return found


def _json_argument(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.ClickException(f"{what} is not valid JSON: {exc}") from None


def _needs_app_url() -> None:
    if not current_app.config.get("APP_URL"):
        raise click.ClickException(
            "APP_URL is not set: runs are driven by deliveries to APP_URL + /api/jobs/NAME"
            " (next to a running `flask dev`, export QSTASH_DEV=1 first)"
        )


#: What `workflows show` prints of an input, output or error, and of each step's result;
#: the database cuts them, so a run of megabyte results is never read whole.
SHOWN_CHARS = 200
SHOWN_RESULT_CHARS = 80
#: Step rows read at a time by `workflows show`.
STEP_PAGE = 500


def _get_run(run_id: str) -> Run:
    """The run without its steps, its texts cut to ``SHOWN_CHARS`` (+1) by the database."""
    run = summary(store_engine(), run_id, SHOWN_CHARS)
    if run is None:
        raise click.ClickException(str(UnknownRun(f"no workflow run {run_id!r}")))
    return run


@workflows.command("list")
@click.option("--workflow", "name", help="Only runs of this workflow.")
@click.option("--state", type=click.Choice(RUN_STATES), help="Only runs in this state.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, help="At most this many.")
@with_appcontext
@_one_line_errors
def workflows_list(name: str | None, state: str | None, limit: int) -> None:
    """List runs, newest first: id, workflow, state, created, and what it waits for."""
    found = list_runs(workflow=name, state=state, limit=limit)
    for run in found:
        detail = run.waiting_for or (abbreviate(run.error, 80) if run.error else "")
        line = f"{run.id}  {run.workflow}  {run.state}  {at(run.created_ms)}  {detail}"
        click.echo(line.rstrip())
    if not found:
        click.echo("no runs")


@workflows.command("show")
@click.argument("run_id")
@with_appcontext
@_one_line_errors
def workflows_show(run_id: str) -> None:
    """Show run RUN_ID, then one line per step: what ran, how long, how often, its result."""
    run = _get_run(run_id)
    click.echo(f"run {run.id}  workflow {run.workflow}  {run.state}")
    click.echo(f"  created {at(run.created_ms)}, updated {at(run.updated_ms)}", nl=False)
    click.echo(f", finished {at(run.finished_ms)}" if run.finished_ms else "")
    click.echo(f"  input: {abbreviate(run.input, SHOWN_CHARS)}")
    if run.output is not None:
        click.echo(f"  output: {abbreviate(run.output, SHOWN_CHARS)}")
    if run.error is not None:
        error = abbreviate(run.error, SHOWN_CHARS)
        click.echo(f"  failed at step {run.failed_step or '-'}: {error}")
    if run.waiting_for:
        click.echo(f"  waiting for: {run.waiting_for}")
    start: int | None = 0
    while start is not None:
        page_start = start
        rows, start = step_page(store_engine(), run.id, start, STEP_PAGE, SHOWN_RESULT_CHARS)
        if page_start == 0:
            click.echo("steps:" if rows else "steps: none yet")
        _echo_steps(replace(run, steps=tuple(rows)))


def _echo_steps(run: Run) -> None:
    for view in step_views(run):
        step = view.step
        indent = "    " if view.branch else "  "
        took = duration(view.duration_ms) if view.duration_ms is not None else "-"
        line = (
            f"{indent}{view.label:<5} {step.name}  {step.kind}  {step.state}  {took}"
            f"  attempts={step.attempts}"
        )
        if view.wait:
            line += f"  ({view.wait})"
        if step.result is not None:
            line += f"  -> {abbreviate(step.result, SHOWN_RESULT_CHARS)}"
        click.echo(line)


@workflows.command("start")
@click.argument("name")
@click.argument("payload", default="null")
@click.option("--run-id", help="The run's id (default: a new one); an existing id starts nothing.")
@with_appcontext
@_one_line_errors
def workflows_start(name: str, payload: str, run_id: str | None) -> None:
    """Validate PAYLOAD (JSON) with workflow NAME's schema, start a run, print its id."""
    workflow = _workflow(name)
    data = _json_argument(payload, "PAYLOAD")
    _needs_app_url()
    click.echo(workflow.start(data, run_id=run_id))


@workflows.command("cancel")
@click.argument("run_id")
@with_appcontext
@_one_line_errors
def workflows_cancel(run_id: str) -> None:
    """Cancel run RUN_ID: no step of it runs any more (one running now may finish)."""
    try:
        cancelled = cancel(run_id)
    except UnknownRun as exc:
        raise click.ClickException(str(exc)) from None
    if not cancelled:
        state = _get_run(run_id).state
        raise click.ClickException(f"run {run_id} has finished already ({state})")
    click.echo(f"cancelled {run_id}")


@workflows.command("notify")
@click.argument("event_id")
@click.argument("data", required=False)
@with_appcontext
@_one_line_errors
def workflows_notify(event_id: str, data: str | None) -> None:
    """Notify EVENT_ID with DATA (JSON; none: the waits get {}): print each run it resumes."""
    value = None if data is None else _json_argument(data, "DATA")
    check_event_id(event_id)  # the one rule: the HTTP endpoint's message too
    _needs_app_url()
    resumed = notify(event_id) if data is None else notify(event_id, value)
    for run_id in resumed:
        click.echo(run_id)
    if not resumed:
        days = current_app.config["WORKFLOW_EVENT_RETENTION_DAYS"]
        click.echo(
            f"no run is waiting for {event_id}; the event is kept {days} days for runs"
            " that started before it and wait for it later"
        )


@workflows.command("resume")
@click.argument("run_id")
@with_appcontext
@_one_line_errors
def workflows_resume(run_id: str) -> None:
    """Publish a delivery that drives run RUN_ID on (after fixing what stopped it)."""
    run = _get_run(run_id)
    if run.finished:
        raise click.ClickException(f"run {run_id} has finished ({run.state}): nothing to resume")
    _workflow(run.workflow)  # renamed or removed since the run started: say so
    _needs_app_url()
    click.echo(resume(run_id))


# The dev server needs no configured app, so it hangs off the plugin group directly.
from app.devserver.cli import dev_server  # noqa: E402

qstash.add_command(dev_server)
