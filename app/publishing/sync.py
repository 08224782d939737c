"""Schedules and queues as code: make QStash match what the job modules declare.

Each ``@cron`` job owns the schedule ``<QSTASH_SCHEDULE_PREFIX><job name>``. ``plan_schedules``
compares the declared schedules with QStash's and returns one ``Change`` per schedule:
create, update (an upsert under the same id), delete (ours, no longer declared) or
unchanged. Schedules without our prefix are foreign and never touched. Queues are only
ever created or updated: a queue no job declares may still hold someone's messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.errors import JobDefinitionError
from app.publishing.jobs import resolve_callback
from app.qstash.client.expressions import duration_seconds
from app.qstash.client.options import check_name

if TYPE_CHECKING:
    from app.jobs import Job
    from app.qstash.client.api import QStash
    from app.qstash.client.models import Queue, Schedule

#: The body every scheduled delivery carries; a cron job's schema must accept it.
SCHEDULE_BODY = "{}"
#: Fields compared between a declared schedule and QStash's, in the order they are shown.
_COMPARED = (
    "destination",
    "cron",
    "retries",
    "retry_delay",
    "callback",
    "failure_callback",
    "timeout",
    "queue",
    "body",
)


@dataclass(frozen=True)
class DesiredSchedule:
    """A schedule as a ``@cron`` job declares it."""

    schedule_id: str
    job: str
    destination: str
    cron: str
    retries: int | None = None
    retry_delay: str | None = None
    callback: str | None = None
    failure_callback: str | None = None
    timeout: int | None = None
    queue: str | None = None
    body: str = SCHEDULE_BODY

    def create_options(self) -> dict[str, Any]:
        """Return the keyword arguments of ``QStash.create_schedule`` for this schedule."""
        options = {name: getattr(self, name) for name in _COMPARED}
        del options["destination"], options["body"]
        return {
            **{key: value for key, value in options.items() if value is not None},
            "schedule_id": self.schedule_id,
            "content_type": "application/json",
        }


@dataclass
class Change:
    """What sync does to one schedule or queue, and why."""

    action: str  # "create", "update", "delete" or "unchanged"
    name: str
    details: list[str] = field(default_factory=list)
    desired: Any = None

    def describe(self) -> str:
        """Return one line for the diff: ``+ create id  0 9 * * *``, ``~ update id  cron: …``."""
        sign = {"create": "+", "update": "~", "delete": "-", "unchanged": "="}[self.action]
        suffix = f"  {'; '.join(self.details)}" if self.details else ""
        return f"{sign} {self.action} {self.name}{suffix}"


def schedule_id_for(prefix: str, job: Job) -> str:
    """Return the stable schedule id of a ``@cron`` job."""
    return check_name(f"{prefix}{job.name}", "schedule id (QSTASH_SCHEDULE_PREFIX + job name)")


def desired_schedules(jobs: Iterable[Job], app_url: str, prefix: str) -> list[DesiredSchedule]:
    """Return the schedule each ``@cron`` job declares, checking it can be delivered."""
    base = app_url.rstrip("/")
    result = []
    for job in jobs:
        if job.cron is None:
            continue
        _check_empty_payload(job)
        result.append(
            DesiredSchedule(
                schedule_id=schedule_id_for(prefix, job),
                job=job.name,
                destination=job.url(base),
                cron=job.cron.text,
                retries=job.retries,
                retry_delay=job.retry_delay,
                callback=job.callback and resolve_callback(job.callback, base),
                failure_callback=job.failure_callback
                and resolve_callback(job.failure_callback, base),
                timeout=None if job.timeout is None else duration_seconds(job.timeout),
                queue=job.queue,
            )
        )
    return result


def _check_empty_payload(job: Job) -> None:
    if job.schema is not None and job.schema.validate({}):
        raise JobDefinitionError(
            f"cron job {job.name!r}: its schema rejects the payload {SCHEDULE_BODY}"
            " that every scheduled delivery carries; give its fields defaults"
        )


def _differences(desired: DesiredSchedule, actual: Schedule) -> list[str]:
    changes = []
    for name in _COMPARED:
        wanted, current = getattr(desired, name), getattr(actual, name)
        if name == "retries" and wanted is None:
            continue  # QStash's default applies; whatever it reports is fine
        if wanted != current:
            changes.append(f"{name}: {current!r} -> {wanted!r}")
    return changes


def plan_schedules(
    desired: Iterable[DesiredSchedule], existing: Iterable[Schedule], prefix: str
) -> list[Change]:
    """Return the changes that make the schedules carrying ``prefix`` match ``desired``."""
    ours = {s.schedule_id: s for s in existing if s.schedule_id.startswith(prefix)}
    changes = []
    for wanted in desired:
        actual = ours.pop(wanted.schedule_id, None)
        if actual is None:
            detail = [f"{wanted.cron}  -> {wanted.destination}"]
            changes.append(Change("create", wanted.schedule_id, detail, wanted))
            continue
        differences = _differences(wanted, actual)
        action = "update" if differences else "unchanged"
        changes.append(Change(action, wanted.schedule_id, differences, wanted))
    for stale in sorted(ours):
        changes.append(Change("delete", stale, ["no @cron job declares it any more"]))
    return changes


def foreign_schedules(existing: Iterable[Schedule], prefix: str) -> list[Schedule]:
    """Return the schedules sync leaves alone (without our prefix)."""
    return [s for s in existing if not s.schedule_id.startswith(prefix)]


def apply_schedules(client: QStash, changes: Iterable[Change]) -> None:
    """Carry out ``changes`` against QStash."""
    for change in changes:
        if change.action in ("create", "update"):
            wanted: DesiredSchedule = change.desired
            client.create_schedule(wanted.destination, body=wanted.body, **wanted.create_options())
        elif change.action == "delete":
            client.delete_schedule(change.name)


def desired_queues(jobs: Iterable[Job]) -> dict[str, int]:
    """Return each declared queue's parallelism; jobs sharing a queue must agree on it."""
    queues: dict[str, tuple[int, str]] = {}
    for job in jobs:
        if job.queue is None:
            continue
        parallelism = job.parallelism or 1
        seen = queues.setdefault(job.queue, (parallelism, job.name))
        if seen[0] != parallelism:
            raise JobDefinitionError(
                f"queue {job.queue!r}: job {seen[1]!r} declares parallelism {seen[0]} but"
                f" job {job.name!r} declares {parallelism}"
            )
    return {name: parallelism for name, (parallelism, _) in queues.items()}


def plan_queues(desired: dict[str, int], existing: Iterable[Queue]) -> list[Change]:
    """Return the changes that give every declared queue its parallelism."""
    current = {queue.name: queue for queue in existing}
    changes = []
    for name, parallelism in sorted(desired.items()):
        queue = current.get(name)
        if queue is None:
            changes.append(Change("create", name, [f"parallelism={parallelism}"], parallelism))
        elif queue.parallelism != parallelism:
            detail = [f"parallelism: {queue.parallelism} -> {parallelism}"]
            changes.append(Change("update", name, detail, parallelism))
        else:
            changes.append(Change("unchanged", name, [f"parallelism={parallelism}"], parallelism))
    return changes


def apply_queues(client: QStash, changes: Iterable[Change]) -> None:
    """Create or update the queues in ``changes``."""
    for change in changes:
        if change.action in ("create", "update"):
            client.upsert_queue(change.name, parallelism=change.desired)
