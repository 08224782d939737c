"""What QStash answers, as small typed records (the full JSON stays in ``raw``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.qstash.client.errors import QStashError


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(slots=True)  # not frozen: a batch builds one per message, frozen init is slower
class PublishResult:
    """The answer to one publish: the message id, and whether it was a duplicate.

    Publishing to a URL group answers once per endpoint: ``endpoints`` then holds one
    result per URL (with ``url``), and ``message_id`` is the first endpoint's.
    """

    message_id: str
    deduplicated: bool = False
    url: str | None = None
    endpoints: tuple[PublishResult, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> PublishResult:
        """Read ``{"messageId", "deduplicated"?, "url"?}`` or a URL group's list of them."""
        if isinstance(data, list) and data:
            endpoints = tuple(cls.from_json(item) for item in data)
            first = endpoints[0]
            return cls(first.message_id, first.deduplicated, None, endpoints)
        try:
            message_id = data["messageId"]
        except (KeyError, TypeError):
            message_id = None
        if not isinstance(message_id, str):
            raise QStashError(f"unexpected answer from QStash (no messageId): {str(data)[:200]}")
        return cls(message_id, data.get("deduplicated") is True, data.get("url"))


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule as ``GET /v2/schedules`` lists it."""

    schedule_id: str
    destination: str
    cron: str
    paused: bool = False
    method: str = "POST"
    body: str | None = None
    retries: int | None = None
    retry_delay: str | None = None
    callback: str | None = None
    failure_callback: str | None = None
    timeout: int | None = None
    queue: str | None = None
    created_at: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Schedule:
        """Read one schedule object of QStash's API."""
        return cls(
            schedule_id=str(data["scheduleId"]),
            destination=str(data.get("destination", "")),
            cron=str(data.get("cron", "")),
            paused=bool(data.get("isPaused", False)),
            method=str(data.get("method") or "POST"),
            body=data.get("body") if isinstance(data.get("body"), str) else None,
            retries=_int(data.get("retries")),
            retry_delay=_str(data.get("retryDelayExpression")),
            callback=_str(data.get("callback")),
            failure_callback=_str(data.get("failureCallback")),
            timeout=_int(data.get("timeout")),
            queue=_str(data.get("queueName")),
            created_at=_int(data.get("createdAt")),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class Queue:
    """A queue: its name, how many deliveries it runs at once, and its backlog."""

    name: str
    parallelism: int = 1
    paused: bool = False
    lag: int = 0
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Queue:
        """Read one queue object of QStash's API."""
        return cls(
            name=str(data["name"]),
            parallelism=_int(data.get("parallelism")) or 1,
            paused=bool(data.get("paused", False)),
            lag=_int(data.get("lag")) or 0,
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class DlqMessage:
    """A message in the dead-letter queue, with the last answer its endpoint gave."""

    dlq_id: str
    message_id: str
    url: str
    method: str = "POST"
    response_status: int | None = None
    response_body: str | None = None
    retried: int | None = None
    created_at: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any], dlq_id: str = "") -> DlqMessage:
        """Read one DLQ message object of QStash's API."""
        return cls(
            dlq_id=str(data.get("dlqId") or dlq_id),
            message_id=str(data.get("messageId", "")),
            url=str(data.get("url", "")),
            method=str(data.get("method") or "POST"),
            response_status=_int(data.get("responseStatus")),
            response_body=_str(data.get("responseBody")),
            retried=_int(data.get("retried")),
            created_at=_int(data.get("createdAt")),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class DlqPage:
    """One page of ``GET /v2/dlq``; pass ``cursor`` back for the next (None: last page)."""

    messages: list[DlqMessage]
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """The account's current and next signing keys."""

    current: str
    next: str
