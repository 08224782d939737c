"""The job registry: ``@job`` and ``@cron`` declarations, validated at import time.

A job is one handler ``(payload, delivery) -> result`` plus the options QStash needs to
deliver it (retries, retry delay, queue, callbacks, timeout). ``@job`` returns the ``Job``
itself, so the module that declares a job also exposes it for publishing and for direct
calls in unit tests. The HTTP side lives in ``blueprint.py``; publishing
(``Job.enqueue``…) is implemented in ``app.qstash.client.jobs``.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, overload

from marshmallow import Schema

from app.cron import CronExpression, parse_cron
from app.errors import JobDefinitionError
from app.qstash.client.expressions import Duration, duration_seconds

if TYPE_CHECKING:
    from app.qstash.receiver import Delivery

Handler = Callable[[Any, "Delivery"], Any]

#: Job names are URL path segments: lower-case words joined by single hyphens.
NAME_PATTERN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
URL_PREFIX = "/api/jobs"


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

    @property
    def path(self) -> str:
        """The URL path QStash calls, relative to ``APP_URL``."""
        return f"{URL_PREFIX}/{self.name}"

    def url(self, app_url: str) -> str:
        """Return the public URL of this job under ``app_url``."""
        return app_url.rstrip("/") + self.path

    def enqueue(self, payload: Any = None, /, **options: Any) -> str:
        """Validate ``payload`` and publish it to this job; return the message id.

        Options override the job's defaults: ``delay``, ``not_before``, ``retries``,
        ``retry_delay``, ``callback``, ``failure_callback``, ``deduplication_id``,
        ``headers``, ``timeout``, ``queue``, ``flow_control``… (``app.qstash.client``).
        """
        # Imported on use: the publishing module imports this one.
        from app.qstash.client import jobs as publishing

        return publishing.enqueue(self, payload, **options)

    def enqueue_many(self, payloads: Iterable[Any], /, **options: Any) -> list[str]:
        """Validate every payload, then publish them in one batch call; return the ids."""
        from app.qstash.client import jobs as publishing

        return publishing.enqueue_many(self, payloads, **options)

    def schedule_at(
        self, when: datetime | int | float, payload: Any = None, /, **options: Any
    ) -> str:
        """Publish ``payload`` for delivery not before ``when``; return the message id."""
        from app.qstash.client import jobs as publishing

        return publishing.schedule_at(self, when, payload, **options)

    def __call__(self, payload: Any, delivery: Delivery) -> Any:
        """Run the handler directly, bypassing HTTP (for unit tests and scripts)."""
        return self.handler(payload, delivery)

    def __repr__(self) -> str:
        return f"<Job {self.name}>"


def _validate(job: Job) -> None:
    if not isinstance(job.name, str) or not NAME_PATTERN.fullmatch(job.name):
        raise JobDefinitionError(
            f"invalid job name {job.name!r}: use lower-case letters, digits and single"
            " hyphens, like 'send-email'"
        )
    if job.retries is not None and (
        not isinstance(job.retries, int) or isinstance(job.retries, bool) or job.retries < 0
    ):
        raise JobDefinitionError(f"job {job.name!r}: retries must be an int >= 0")
    if job.parallelism is not None and (
        not isinstance(job.parallelism, int) or job.parallelism < 1
    ):
        raise JobDefinitionError(f"job {job.name!r}: parallelism must be an int >= 1")
    if job.parallelism is not None and job.queue is None:
        raise JobDefinitionError(f"job {job.name!r}: parallelism needs a queue")
    if not isinstance(job.dedupe, bool):
        raise JobDefinitionError(f"job {job.name!r}: dedupe must be True or False")
    if not callable(job.handler):
        raise JobDefinitionError(f"job {job.name!r}: the handler is not callable")


def _schema_instance(schema: type[Schema] | Schema | None, name: str) -> Schema | None:
    if schema is None or isinstance(schema, Schema):
        return schema
    if isinstance(schema, type) and issubclass(schema, Schema):
        return schema()
    raise JobDefinitionError(f"job {name!r}: schema must be a marshmallow Schema, not {schema!r}")


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
        except JobDefinitionError as exc:
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
        options.setdefault("description", (handler.__doc__ or "").strip().split("\n")[0])
        job = Job(name=name, handler=handler, schema=_schema_instance(schema, name), **options)
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
        return imported


#: The default registry, filled by the ``@job``/``@cron`` declarations of job modules.
registry = JobRegistry()
job = registry.job
cron = registry.cron
