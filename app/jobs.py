"""The job registry: ``@job`` and ``@cron`` declarations, validated at import time.

A job is one handler ``(payload, delivery) -> result`` plus the options QStash needs to
deliver it (retries, retry delay, queue, callbacks, timeout). ``@job`` returns the ``Job``
itself, so the module that declares a job also exposes it for publishing and for direct
calls in unit tests. The HTTP side lives in ``blueprint.py``; publishing
(``Job.enqueue``…) is implemented in ``app.publishing.jobs``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, overload

from marshmallow import Schema

from app.errors import JobDefinitionError
from app.names import NAME_LIMIT, NAME_PATTERN, URL_PREFIX, is_job_name, job_path
from app.publishing import jobs as publishing
from app.qstash.client.expressions import Duration, duration_seconds, parse_retry_delay, shown
from app.qstash.client.options import check_name, check_url
from app.qstash.cron import CronExpression, parse_cron
from app.qstash.errors import InvalidCron

if TYPE_CHECKING:
    from app.delivery import Delivery

__all__ = [
    "MAX_RETRIES",
    "NAME_LIMIT",
    "NAME_PATTERN",
    "URL_PREFIX",
    "Handler",
    "Job",
    "JobRegistry",
    "cron",
    "job",
    "registry",
]

Handler = Callable[[Any, "Delivery"], Any]

#: Added to a job's own timeout in its lease (``Job.lease_seconds``).
LEASE_MARGIN = 30

#: The most retries a job may declare. Upstash publishes 3, 5 and 20 as its plans'
#: maxima (more on request); the bundled dev server accepts up to this.
MAX_RETRIES = 100


@dataclass(eq=False)
class Job:
    """A registered job: its handler, payload schema and delivery defaults."""

    name: str
    handler: Handler
    schema: Schema | None = None
    retries: int | None = None
    retry_delay: str | None = None
    queue: str | None = None
    parallelism: int | None = None
    callback: str | None = None
    failure_callback: str | None = None
    timeout: Duration | None = None
    cron: CronExpression | None = None
    description: str = ""
    #: Claim each message id once, so a redelivery of a completed message does not rerun.
    dedupe: bool = True

    @property
    def timeout_seconds(self) -> int | None:
        """The ``timeout`` option in whole seconds, None if unset."""
        return None if self.timeout is None else duration_seconds(self.timeout, name="timeout")

    def lease_seconds(self, default: float) -> float:
        """How long a claim on one of this job's deliveries holds before another may take
        it over: ``default`` (DUPLICATE_LEASE_SECONDS), or the job's timeout + 30 s if
        longer, so the lease outlasts the longest legitimate run."""
        own = self.timeout_seconds
        return default if own is None else max(default, own + LEASE_MARGIN)

    @property
    def payload_schema(self) -> Schema | None:
        """The schema of what a publisher sends (a workflow's: its input's)."""
        return self.schema

    @property
    def path(self) -> str:
        """The URL path QStash calls, relative to ``APP_URL``."""
        return job_path(self.name)

    def url(self, app_url: str) -> str:
        """Return the public URL of this job under ``app_url``."""
        return app_url.rstrip("/") + self.path

    def enqueue(self, payload: Any = None, /, **options: Any) -> str:
        """Validate ``payload`` and publish it to this job; return the message id.

        Options override the job's defaults: ``delay``, ``not_before``, ``retries``,
        ``retry_delay``, ``callback``, ``failure_callback``, ``deduplication_id``,
        ``headers``, ``timeout``, ``queue``, ``flow_control``… (``app.qstash.client``).
        """
        return publishing.enqueue(self, payload, **options)

    def enqueue_many(self, payloads: Iterable[Any], /, **options: Any) -> list[str]:
        """Validate every payload, then publish them in one batch call; return the ids."""
        return publishing.enqueue_many(self, payloads, **options)

    def enqueue_to_group(self, group: str, payload: Any = None, /, **options: Any) -> list[str]:
        """Validate ``payload`` with this job's schema and publish it to the URL group
        ``group`` (one message per endpoint); return every message id, in endpoint order.

        The same options as ``enqueue``; ``enqueue`` itself refuses ``url_group=``.
        """
        return publishing.enqueue_to_group(self, group, payload, **options)

    def schedule_at(
        self, when: datetime | int | float, payload: Any = None, /, **options: Any
    ) -> str:
        """Publish ``payload`` for delivery not before ``when``; return the message id."""
        return publishing.schedule_at(self, when, payload, **options)

    def __call__(self, payload: Any, delivery: Delivery) -> Any:
        """Run the handler directly, bypassing HTTP (for unit tests and scripts)."""
        return self.handler(payload, delivery)

    def __repr__(self) -> str:
        return f"<Job {self.name}>"


def _validate(job: Job) -> None:
    """Check every field of ``job`` as QStash and this framework will use it."""
    if not is_job_name(job.name):
        raise JobDefinitionError(
            f"invalid job name {shown(job.name)}: use lower-case letters, digits and single"
            f" hyphens, at most {NAME_LIMIT} characters, like 'send-email'"
        )
    if not callable(job.handler):
        raise JobDefinitionError(f"job {job.name!r}: the handler is not callable")
    for option, check in _CHECKS.items():
        value = getattr(job, option)
        if value is None and option not in _NEVER_NONE:
            continue
        try:
            check(value, option)
        except ValueError as exc:  # the option's own message, with the job's name
            raise JobDefinitionError(f"job {job.name!r}: {exc}") from None
    if job.parallelism is not None and job.queue is None:
        raise JobDefinitionError(f"job {job.name!r}: parallelism needs a queue")


def _int_option(low: int, high: int | None) -> Callable[[Any, str], None]:
    def check(value: Any, option: str) -> None:
        if type(value) is not int or value < low or (high is not None and value > high):
            upper = f" to {high}" if high is not None else " or more"
            raise ValueError(f"{option} must be an int from {low}{upper}, not {shown(value)}")

    return check


def _check_retry_delay(value: Any, option: str) -> None:
    parse_retry_delay(value)  # its message names retry_delay


def _check_callback(value: Any, option: str) -> None:
    if isinstance(value, str) and "://" in value:
        check_url(value, option)
    elif not is_job_name(value):
        raise ValueError(
            f"{option} must be an http(s) URL or the name of a job, not {shown(value)}"
        )


def _check_timeout(value: Any, option: str) -> None:
    if duration_seconds(value, name=option) < 1:
        raise ValueError(f"{option} must be at least 1 second, not {shown(value)}")


def _check_instance(kind: type, what: str) -> Callable[[Any, str], None]:
    def check(value: Any, option: str) -> None:
        if not isinstance(value, kind):
            raise ValueError(f"{option} must be {what}, not {shown(value)}")

    return check


#: How each field is checked (a ValueError says what is wrong); None is "unset", except
#: for the fields that have a value of their own.
_NEVER_NONE = frozenset({"description", "dedupe"})
_CHECKS: dict[str, Callable[[Any, str], object]] = {
    "schema": _check_instance(Schema, "a marshmallow Schema"),
    "retries": _int_option(0, MAX_RETRIES),
    "retry_delay": _check_retry_delay,
    "queue": check_name,
    "parallelism": _int_option(1, None),
    "callback": _check_callback,
    "failure_callback": _check_callback,
    "timeout": _check_timeout,
    "cron": _check_instance(CronExpression, "declared with @cron(name, cron=...)"),
    "description": _check_instance(str, "a string"),
    "dedupe": _check_instance(bool, "True or False"),
}


def schema_instance(schema: type[Schema] | Schema | None, owner: str) -> Schema | None:
    """Return ``schema`` as an instance (a Schema class is instantiated), for ``owner``
    (``"job 'x'"``, ``"workflow 'y'"``); anything else raises ``JobDefinitionError``."""
    if schema is None or isinstance(schema, Schema):
        return schema
    if isinstance(schema, type) and issubclass(schema, Schema):
        return schema()
    raise JobDefinitionError(f"{owner}: schema must be a marshmallow Schema, not {schema!r}")


def _summary(handler: Handler) -> str:
    doc = getattr(handler, "__doc__", None)
    return doc.strip().split("\n")[0] if isinstance(doc, str) else ""


def _default_name(handler: Handler) -> str:
    return getattr(handler, "__name__", "").strip("_").replace("_", "-").lower()


class JobRegistry:
    """The set of declared jobs, by name. ``registry`` below is the default one."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def __iter__(self) -> Iterator[Job]:
        return iter(sorted(self._jobs.values(), key=lambda j: j.name))

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __getitem__(self, name: str) -> Job:
        try:
            return self._jobs[name]
        except KeyError:
            raise KeyError(f"no job named {name!r} is registered") from None

    def add(self, job: Job) -> Job:
        """Validate and register ``job``; a name may be registered once."""
        _validate(job)
        if job.name in self._jobs:
            raise JobDefinitionError(f"A job named {job.name!r} is already registered.")
        self._jobs[job.name] = job
        return job

    @overload
    def job(self, name: Handler, /) -> Job: ...

    @overload
    def job(
        self,
        name: str | None = None,
        /,
        *,
        schema: type[Schema] | Schema | None = None,
        **options: Any,
    ) -> Callable[[Handler], Job]: ...

    def job(
        self,
        name: str | Handler | None = None,
        /,
        *,
        schema: type[Schema] | Schema | None = None,
        **options: Any,
    ) -> Job | Callable[[Handler], Job]:
        """Declare a job, bare (``@job``, named after the function) or with options."""
        if callable(name):
            return self.job()(name)
        if "cron" in options:
            raise JobDefinitionError("declare scheduled jobs with @cron(name, cron=...)")

        def decorator(handler: Handler) -> Job:
            return self._declare(name or _default_name(handler), handler, schema, options)

        return decorator

    def cron(
        self,
        name: str | None = None,
        /,
        *,
        cron: str,
        schema: type[Schema] | Schema | None = None,
        **options: Any,
    ) -> Callable[[Handler], Job]:
        """Declare a job QStash runs on a cron schedule (``CRON_TZ=Zone`` prefix allowed)."""
        try:
            expression = parse_cron(cron)
        except InvalidCron as exc:
            raise JobDefinitionError(f"cron job {name!r}: {exc}") from None

        def decorator(handler: Handler) -> Job:
            job_name = name or _default_name(handler)
            return self._declare(job_name, handler, schema, {**options, "cron": expression})

        return decorator

    def _declare(
        self,
        name: str,
        handler: Handler,
        schema: type[Schema] | Schema | None,
        options: dict[str, Any],
    ) -> Job:
        known = set(Job.__dataclass_fields__) - {"name", "handler", "schema"}
        unknown = set(options) - known
        if unknown:
            raise JobDefinitionError(
                f"job {name!r}: unknown option(s) {', '.join(sorted(unknown))}"
            )
        # A copy: one decorator may declare several jobs, and none may see another's.
        options = {"description": _summary(handler), **options}
        instance = schema_instance(schema, f"job {name!r}")
        job = Job(name=name, handler=handler, schema=instance, **options)
        return self.add(job)

    def discover(self, packages: list[str]) -> list[str]:
        """Import every module of ``packages`` so their declarations run; return their names."""
        imported = []
        for package_name in packages:
            try:
                package = importlib.import_module(package_name)
            except ModuleNotFoundError as exc:
                if exc.name != package_name:
                    raise
                raise JobDefinitionError(f"job package {package_name!r} not found") from None
            imported.append(package.__name__)
            for info in pkgutil.iter_modules(getattr(package, "__path__", [])):
                module = importlib.import_module(f"{package.__name__}.{info.name}")
                imported.append(module.__name__)
        self.check_callbacks()
        return imported

    def check_callbacks(self) -> None:
        """Check that every callback naming a job names a registered one.

        Run once every job is declared (:meth:`discover` does): a job may name one
        declared after it.
        """
        for job in self:
            for option in ("callback", "failure_callback"):
                target = getattr(job, option)
                if target is not None and "://" not in target and target not in self:
                    raise JobDefinitionError(
                        f"job {job.name!r}: {option} {target!r} is neither an http(s) URL"
                        " nor a registered job"
                    )


#: The default registry, filled by the ``@job``/``@cron`` declarations of job modules.
registry = JobRegistry()
job = registry.job
cron = registry.cron
