"""What a bulk call names: the ids, filters, ``count`` and ``cursor`` of QStash's bulk API.

One parser for every call that acts on or lists many records, so they all read a request
the same way, in QStash's field names and with its semantics:

| call                                   | ids          | filters                        |
|----------------------------------------|--------------|--------------------------------|
| ``DELETE /v2/messages``                | ``messageIds``| ``MESSAGES.fields``           |
| ``GET /v2/dlq``, ``DELETE /v2/dlq``,   | ``dlqIds``   | ``DLQ.fields``                 |
| ``POST /v2/dlq/retry``                 |              |                                |

- ids (repeated in the query, or a JSON array in the body as the Python SDK sends them) name
  exactly those records; the other filters are then ignored, as QStash documents;
- a filter field may repeat and then means "any of these" (``label=a&label=b``); different
  fields must all match; ``fromDate``/``toDate`` bound ``createdAt`` (ms, inclusive);
- a field the call does not know, or a filter with no value, is a 400: a typo such as
  ``labeel=x`` must never widen into "everything";
- ``count`` bounds how many records one call acts on; ``cursor`` (DLQ calls) continues after
  the last one acted on;
- only a request naming nothing at all selects every record.

Records are matched in Python: the dev server holds thousands of records, not millions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from app.devserver.json_input import parse_json
from app.devserver.publish import ascii_int, bad_request
from app.devserver.records import Message, labels

if TYPE_CHECKING:
    from werkzeug.wrappers import Request

#: Filters every bulk call understands (each may repeat, except the two dates).
COMMON = frozenset(
    {
        "url",
        "topicName",
        "queueName",
        "scheduleId",
        "flowControlKey",
        "callerIp",
        "label",
        "fromDate",
        "toDate",
    }
)
#: Filters holding one number: a bound, not a choice.
DATES = frozenset({"fromDate", "toDate"})
#: The most records one call lists or acts on.
MAX_COUNT = 1000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Kind:
    """The records one family of calls acts on: its ids parameter and its filters."""

    ids: str
    fields: frozenset[str]
    #: Whether its calls page with ``cursor``.
    paged: bool

    def parameters(self) -> list[str]:
        """Return every query parameter its calls take, sorted."""
        return sorted({self.ids, "count", *self.fields, *(["cursor"] if self.paged else [])})


MESSAGES = Kind("messageIds", COMMON | {"host", "path"}, paged=False)
DLQ = Kind("dlqIds", COMMON | {"messageId", "responseStatus"}, paged=True)


@dataclass(frozen=True, slots=True)
class Selection:
    """The records a bulk request names."""

    ids: tuple[str, ...] | None
    filters: dict[str, tuple[str, ...]]
    count: int | None
    cursor: int | None

    @property
    def everything(self) -> bool:
        """Whether the request names nothing at all, and so every record."""
        return self.ids is None and not self.filters

    def matches(self, message: Message, response_status: int | None = None) -> bool:
        """Return whether ``message`` (with its DLQ entry's status) passes every filter."""
        created = int(message.spec.get("createdAt") or 0)
        for field, wanted in self.filters.items():
            if field == "fromDate":
                if created < int(wanted[0]):
                    return False
            elif field == "toDate":
                if created > int(wanted[0]):
                    return False
            elif not set(wanted) & _values(field, message, response_status):
                return False
        return True


def parse(request: Request, kind: Kind) -> Selection:
    """Return what ``request`` names among ``kind``'s records; 400 on anything unknown."""
    ids: list[str] | None = None
    filters: dict[str, tuple[str, ...]] = {}
    count = cursor = None
    for name, values in request.args.lists():
        if name == kind.ids:
            ids = _ids(name, values)
        elif name == "count":
            count = count_param(_single(name, values))
        elif name == "cursor" and kind.paged:
            raw = _single(name, values)
            cursor = _number(name, raw) if raw else None
        elif name in kind.fields:
            filters[name] = _filter(name, values)
        else:
            raise bad_request(
                f"unknown filter {name!r}: this call takes {', '.join(kind.parameters())}"
            )
    body_ids = _body_ids(request, kind)
    if body_ids is not None:
        if ids is not None:
            raise bad_request(f"{kind.ids} in both the query and the body: send them once")
        ids = body_ids
    return Selection(tuple(ids) if ids is not None else None, filters, count, cursor)


def take(records: Iterable[T], count: int | None) -> tuple[list[T], bool]:
    """Return the first ``count`` of ``records`` (all for None) and whether more were left."""
    if count is None:
        return list(records), False
    taken: list[T] = []
    iterator: Iterator[T] = iter(records)
    for record in iterator:
        if len(taken) == count:
            return taken, True
        taken.append(record)
    return taken, False


def count_param(raw: str | None) -> int | None:
    """Return the ``count`` query parameter (None if absent); 400 if out of range."""
    if raw is None:
        return None
    count = ascii_int(raw)
    if count is None or not 1 <= count <= MAX_COUNT:
        raise bad_request(f"count must be an integer 1-{MAX_COUNT}, not {raw!r}")
    return count


def _values(field: str, message: Message, response_status: int | None) -> set[str]:
    """Return the values of ``field`` a record holds (a filter matches any one of them)."""
    spec = message.spec
    if field == "label":
        return set(labels(spec))
    if field == "messageId":
        return {message.id}
    if field == "responseStatus":
        return {str(response_status or 0)}
    if field in ("host", "path"):
        parts = urlsplit(spec["url"])
        if field == "path":
            return {parts.path or "/"}
        host = parts.hostname or ""
        return {host, f"{host}:{parts.port}"} if parts.port else {host}
    flow = spec.get("flowControl") or {}
    value: Any = {
        "url": spec.get("url"),
        "queueName": spec.get("queueName"),
        "scheduleId": spec.get("scheduleId"),
        "flowControlKey": flow.get("key"),
        "callerIp": spec.get("callerIP"),
        "topicName": spec.get("topicName"),
    }.get(field)
    return {value} if value else set()


def _single(name: str, values: list[str]) -> str:
    if len(values) > 1:
        raise bad_request(f"{name} may be given once, not {len(values)} times")
    return values[0]


def _number(name: str, raw: str) -> int:
    number = ascii_int(raw)
    if number is None:
        raise bad_request(f"{name} must be a non-negative integer, not {raw!r}")
    return number


def _filter(name: str, values: list[str]) -> tuple[str, ...]:
    if any(not value for value in values):
        raise bad_request(f"the {name} filter needs a value")
    if name in DATES:
        return (str(_number(name, _single(name, values))),)
    if name == "responseStatus":
        return tuple(str(_number(name, value)) for value in values)
    return tuple(values)


def _ids(name: str, values: list[str]) -> list[str]:
    if any(not value for value in values):
        raise bad_request(f"{name} must not hold an empty id")
    return values


def _body_ids(request: Request, kind: Kind) -> list[str] | None:
    """Return the ids of a JSON body ``{"<ids>": [...]}``, None without a body."""
    raw = request.get_data()
    if not raw.strip():
        return None
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise bad_request(f'the body must be a JSON object {{"{kind.ids}": [...]}}')
    unknown = sorted(set(data) - {kind.ids})
    if unknown:
        raise bad_request(f"unknown field {unknown[0]!r} in the body: it takes only {kind.ids}")
    if kind.ids not in data:
        return None
    ids = data[kind.ids]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise bad_request(f"{kind.ids} must be an array of strings")
    return _ids(kind.ids, ids)
