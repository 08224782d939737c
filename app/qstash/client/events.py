"""QStash's logs (``GET /v2/events``): what happened to each message, newest first.

```python
page = qstash.logs(messageId=result.message_id, state="DELIVERED")
for event in page.events:
    print(event.time, event.state, event.response_status)
more = qstash.logs(cursor=page.cursor) if page.cursor else None
```

Filters are QStash's query parameters under their own names (``url``, ``topicName``,
``queueName``, ``scheduleId``, ``label``, ``state``, ``fromDate``, ``toDate``,
``flowControlKey``, ``callerIp``, ``host``, ``path``); a list means "any of these".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from app.qstash.client.base import BaseClient

#: The most events one call returns (QStash's maximum ``count``).
MAX_COUNT = 1000

FilterValue = str | int | Iterable[str | int]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One state change of one message (``CREATED``, ``ACTIVE``, ``DELIVERED``, …)."""

    time: int
    message_id: str
    state: str
    url: str = ""
    error: str | None = None
    next_delivery_time: int | None = None
    response_status: int | None = None
    response_body: str | None = None
    labels: tuple[str, ...] = ()
    url_group: str | None = None
    queue: str | None = None
    schedule_id: str | None = None
    retry_delay: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LogEvent:
        """Read one event object of QStash's API."""
        names = data.get("labels")
        if not isinstance(names, list):
            names = [data["label"]] if _str(data.get("label")) else []
        return cls(
            time=_int(data.get("time")) or 0,
            message_id=str(data.get("messageId", "")),
            state=str(data.get("state", "")),
            url=str(data.get("url", "")),
            error=_str(data.get("error")),
            next_delivery_time=_int(data.get("nextDeliveryTime")),
            response_status=_int(data.get("responseStatus")),
            response_body=_str(data.get("responseBody")),
            labels=tuple(str(name) for name in names),
            url_group=_str(data.get("topicName")),
            queue=_str(data.get("queueName")),
            schedule_id=_str(data.get("scheduleId")),
            retry_delay=_str(data.get("retryDelayExpr") or data.get("retryDelayExpression")),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class LogPage:
    """One page of events; pass ``cursor`` back for the next (None: last page)."""

    events: list[LogEvent]
    cursor: str | None = None


def _values(name: str, value: FilterValue) -> list[str]:
    if isinstance(value, bool):
        raise ValueError(f"filter {name} must be text or a number, not {value!r}")
    if isinstance(value, str | int):
        values = [str(value)]
    else:
        values = [str(item) for item in value]
    if not values or any(not item for item in values):
        raise ValueError(f"filter {name} needs one or more non-empty values, not {value!r}")
    return values


class EventsAPI(BaseClient):
    """``logs`` (and its older name ``events``), mixed into ``QStash``."""

    def logs(
        self,
        *,
        cursor: str | None = None,
        count: int | None = None,
        message_ids: Iterable[str] | None = None,
        **filters: FilterValue,
    ) -> LogPage:
        """Return one page of events, newest first (filters: see the module docstring)."""
        params: dict[str, list[str]] = {}
        if count is not None:
            if type(count) is not int or not 1 <= count <= MAX_COUNT:
                raise ValueError(f"count must be an int 1-{MAX_COUNT}, not {count!r}")
            params["count"] = [str(count)]
        if cursor is not None:
            params["cursor"] = [cursor]
        if message_ids is not None:
            params["messageIds"] = _values("message_ids", message_ids)
        for name, value in filters.items():
            params[name] = _values(name, value)
        data = self._call("GET", "/v2/events", params=params) or {}
        events = [LogEvent.from_json(item) for item in data.get("events") or []]
        return LogPage(events=events, cursor=data.get("cursor") or None)

    def events(self, **options: Any) -> LogPage:
        """The same as ``logs`` (QStash's older name for it)."""
        return self.logs(**options)
