"""From a ``Job`` to a ``Message``: validate the payload, find the URL, apply the defaults.

``Job.enqueue`` / ``enqueue_many`` / ``schedule_at`` / ``enqueue_to_group`` (in
``app.jobs``) call into here. A payload is loaded with the job's own schema *before*
anything is published, so a bad payload raises marshmallow's ``ValidationError`` at the
call site and never enters the queue. The destination is ``APP_URL`` + the job's path
(or, for ``enqueue_to_group``, every endpoint of a URL group); the job's declared
retries, retry delay, queue, callbacks and timeout apply unless the call overrides them
(pass ``queue=None`` to publish around the job's queue). A callback may name a job
(``"webhook-failed"``) instead of a URL.

A URL group fans out to one message per endpoint, so it has its own call returning every
id: ``enqueue`` and ``enqueue_many`` answer one id per payload and refuse ``url_group=``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import current_app, has_app_context
from marshmallow import ValidationError

from app.errors import ConfigurationError
from app.names import is_job_name, job_path
from app.publishing.client import Publisher, current_publisher
from app.qstash.client.api import encode_json
from app.qstash.client.options import Message, check_name, publish_options

if TYPE_CHECKING:
    from app.jobs import Job

_JOB_DEFAULTS = ("retries", "retry_delay", "callback", "failure_callback", "timeout")
_CALLBACKS = ("callback", "failure_callback")


def _app_url(app_url: str | None) -> str:
    if app_url is None and has_app_context():
        app_url = current_app.config.get("APP_URL")
    if not app_url:
        raise ConfigurationError(
            "APP_URL is not set: publishing a job needs the public URL QStash calls"
            " (or pass app_url=... outside a Flask app)"
        )
    return app_url.rstrip("/")


def _known_job(name: str) -> bool:
    if not has_app_context():
        return True
    registry = current_app.extensions.get("qstash_jobs")
    return registry is None or name in registry


def resolve_callback(target: str, app_url: str) -> str:
    """Return ``target`` as a URL: a job name becomes ``APP_URL`` + that job's path."""
    if "://" in target:
        return target
    if not is_job_name(target) or not _known_job(target):
        raise ValueError(f"callback {target!r} is neither an http(s) URL nor a registered job")
    return app_url + job_path(target)


def validate_payload(job: Job, payload: Any) -> bytes:
    """Load ``payload`` with the job's schema (raising ``ValidationError``); return the body."""
    if job.schema is not None:
        try:
            job.schema.load(payload)
        except ValidationError as exc:
            exc.add_note(f"job {job.name!r}: the payload was not published")
            raise
    return encode_json(payload)


def job_options(job: Job, app_url: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return the publish options of ``job``: its defaults, then ``overrides``."""
    options: dict[str, Any] = {name: getattr(job, name) for name in _JOB_DEFAULTS}
    options["queue"] = job.queue
    options.update(overrides)
    for name in _CALLBACKS:
        if options.get(name) is not None:
            options[name] = resolve_callback(options[name], app_url)
    options.setdefault("content_type", "application/json")
    return options


def job_message(
    job: Job,
    payload: Any,
    *,
    app_url: str | None = None,
    url_group: str | None = None,
    **overrides: Any,
) -> Message:
    """Return the validated ``Message`` that delivers ``payload`` to ``job``.

    With ``url_group="name"`` it is published to that URL group instead.
    """
    base = _app_url(app_url)
    body = validate_payload(job, payload)
    options = job_options(job, base, overrides)
    queue = options.pop("queue")
    return Message(url_group or job.url(base), body, publish_options(**options), queue)


def _refuse_url_group(options: Mapping[str, Any], call: str) -> None:
    if "url_group" in options:
        raise ValueError(
            f"Job.{call} publishes to the job's own URL and answers one id per payload;"
            " a URL group fans out to one message per endpoint:"
            " use job.enqueue_to_group(group, payload, ...), which returns every id"
        )


def _publisher(client: Publisher | None) -> Publisher:
    if client is not None:
        return client
    if not has_app_context():
        raise ConfigurationError(
            "publishing a job needs a Flask app context (with app.app_context(): ...)"
            " or an explicit client=QStash(...)"
        )
    return current_publisher()


def enqueue(job: Job, payload: Any, *, client: Publisher | None = None, **options: Any) -> str:
    """Validate and publish ``payload`` to ``job``; return the message id."""
    _refuse_url_group(options, "enqueue")
    message = job_message(job, payload, **options)
    return _publisher(client).send(message).message_id


def enqueue_to_group(
    job: Job, group: str, payload: Any, *, client: Publisher | None = None, **options: Any
) -> list[str]:
    """Validate ``payload`` with ``job``'s schema and publish it to the URL group ``group``;
    return the id of each endpoint's message, in the group's endpoint order."""
    _refuse_url_group(options, "enqueue_to_group")
    message = job_message(job, payload, url_group=check_name(group, "URL group"), **options)
    result = _publisher(client).send(message)
    return [endpoint.message_id for endpoint in result.endpoints] or [result.message_id]


def enqueue_many(
    job: Job,
    payloads: Iterable[Any],
    *,
    client: Publisher | None = None,
    deduplication_ids: Iterable[str] | None = None,
    **options: Any,
) -> list[str]:
    """Validate every payload first, then publish them all in one batch; return the ids.

    ``deduplication_ids`` gives each message its own id, one per payload in order (a
    ``deduplication_id`` option would be shared by every message of the batch).
    """
    _refuse_url_group(options, "enqueue_many")
    payloads = list(payloads)
    if deduplication_ids is None:
        messages = [job_message(job, payload, **options) for payload in payloads]
    else:
        ids = list(deduplication_ids)
        if len(ids) != len(payloads) or "deduplication_id" in options:
            raise ValueError("deduplication_ids needs one id per payload and no deduplication_id")
        messages = [
            job_message(job, payload, deduplication_id=dedup, **options)
            for payload, dedup in zip(payloads, ids, strict=True)
        ]
    if not messages:
        return []
    return [result.message_id for result in _publisher(client).send_batch(messages)]


def schedule_at(
    job: Job,
    when: datetime | int | float,
    payload: Any,
    *,
    client: Publisher | None = None,
    **options: Any,
) -> str:
    """Publish ``payload`` to ``job`` for delivery not before ``when``; return the id."""
    _refuse_url_group(options, "schedule_at")
    return enqueue(job, payload, client=client, not_before=when, **options)
