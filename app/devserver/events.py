"""The events (logs) API: each state change of each message, newest first, bounded.

``GET /v2/events`` (the SDKs' path) and ``GET /v2/logs`` (the docs') list what happened:

| state              | recorded when                                                      |
|--------------------|--------------------------------------------------------------------|
| ``CREATED``        | a publish, batch item, URL-group fan-out, schedule firing, DLQ     |
|                    | retry or callback is stored (``nextDeliveryTime``: when it is due) |
| ``ACTIVE``         | an attempt starts                                                  |
| ``DELIVERED``      | the endpoint answered 2xx (with its status and body)               |
| ``ERROR``          | an attempt failed (status and body, or the transport's error)      |
| ``RETRY``          | … and another attempt is due at ``nextDeliveryTime``               |
| ``FAILED``         | … and the retries are exhausted (or 489): the message is in the DLQ |
| ``CANCEL_REQUESTED``, ``CANCELED`` | a pending message is cancelled                     |

The states are spelled as both official SDKs parse them (``CANCELED``; the filter accepts
the docs' ``CANCELLED`` too). Filters are QStash's (``filters.EVENTS``: repeated = any of;
``IN_PROGRESS`` = ACTIVE, RETRY or ERROR); ``cursor`` continues after the last event of a
page. Retention: the newest ``MAX_EVENTS`` events are kept, as QStash keeps the last
10,000 logs; the message body is kept with its ``CREATED`` event up to ``BODY_MAX`` bytes
(larger bodies are left out of the logs), response bodies up to ``BODY_MAX`` bytes. A
message published with ``Upstash-Redact-Fields`` shows (and its events keep) only the
``REDACTED:<sha256>`` form of what it redacts (``redaction.py``).

Recording must not slow deliveries down: ``record`` only appends to a list, and one
thread writes the list every ``FLUSH_EVERY`` seconds in one transaction (a list call
writes it first, so what was recorded is listed). Events not yet written when the process
is killed are lost; the messages themselves are not.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from werkzeug.wrappers import Request, Response

from app.devserver import filters, redaction, views
from app.devserver.callbacks import Response as EndpointResponse
from app.devserver.publish import bad_request
from app.devserver.records import Message, labels
from app.devserver.store import Store

if TYPE_CHECKING:
    from app.devserver.server import DevServer

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000
BODY_MAX = 16 * 1024
FLUSH_EVERY = 0.05
DEFAULT_COUNT = 100

STATES = frozenset(
    {"CREATED", "ACTIVE", "DELIVERED", "ERROR", "RETRY", "FAILED", "CANCEL_REQUESTED", "CANCELED"}
)
#: Filter values standing for several states.
STATE_ALIASES = {"IN_PROGRESS": ("ACTIVE", "RETRY", "ERROR"), "CANCELLED": ("CANCELED",)}

EVENTS = filters.Kind(
    "messageIds",
    filters.COMMON | {"messageId", "state", "endpointName", "host", "path"},
    paged=True,
)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, time INTEGER NOT NULL,"
    " message_id TEXT NOT NULL, state TEXT NOT NULL, url TEXT NOT NULL, host TEXT NOT NULL,"
    " hostname TEXT NOT NULL, path TEXT NOT NULL, topic TEXT, endpoint TEXT, queue TEXT,"
    " schedule TEXT, flow_key TEXT, caller_ip TEXT, labels TEXT NOT NULL, detail TEXT NOT NULL,"
    " body BLOB)",
    "CREATE INDEX IF NOT EXISTS events_message ON events(message_id)",
)

#: Filter field → events column (``label``, ``host``, ``state`` and the dates: see ``_where``).
COLUMNS = {
    "messageId": "message_id",
    "url": "url",
    "topicName": "topic",
    "endpointName": "endpoint",
    "queueName": "queue",
    "scheduleId": "schedule",
    "flowControlKey": "flow_key",
    "callerIp": "caller_ip",
    "path": "path",
}


def _text_or_base64(raw: bytes, name: str) -> dict[str, str]:
    raw = raw[:BODY_MAX]
    try:
        return {name: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {name + "Base64": base64.b64encode(raw).decode("ascii")}


def message_detail(message: Message) -> dict[str, Any]:
    """Return the fields every event of ``message`` carries (the body aside)."""
    view = views.message(message)
    view.pop("body", None)
    view.pop("bodyBase64", None)
    spec = message.spec
    if spec.get("retryDelay"):
        view["retryDelayExpr"] = spec["retryDelay"]  # the name the Python SDK reads
    names = labels(spec)
    if names:
        view["label"], view["labels"] = names[0], names
    for field in ("topicName", "endpointName"):
        if spec.get(field):
            view[field] = spec[field]
    if spec.get("timeout"):
        view["timeout"] = spec["timeout"]
    return view


class EventLog:
    """Records events in memory and writes them to the store in batches."""

    def __init__(self, store: Store, *, flush_every: float = FLUSH_EVERY) -> None:
        self.store = store
        self.flush_every = flush_every
        for statement in SCHEMA:
            store.query(statement)
        self._pending: list[tuple[int, Message, str, dict[str, Any]]] = []
        #: Each recent message's columns and detail JSON, made once for all its events.
        self._known: dict[str, tuple[str, tuple[Any, ...]]] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="qstash-events", daemon=True)

    def start(self) -> None:
        """Start writing recorded events."""
        self._thread.start()

    def stop(self) -> None:
        """Write what is recorded and stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.flush()

    # -- recording (any thread; no I/O) ---------------------------------------------------

    def record(
        self,
        message: Message,
        state: str,
        *,
        response: EndpointResponse | None = None,
        next_delivery: float | None = None,
        error: str | None = None,
    ) -> None:
        """Record that ``message`` entered ``state``."""
        extra: dict[str, Any] = {}
        if next_delivery is not None:
            extra["nextDeliveryTime"] = int(next_delivery * 1000)
        if response is not None:
            if response.status is not None:
                extra["responseStatus"] = response.status
                extra["responseHeader"] = response.headers
                extra.update(_text_or_base64(response.body, "responseBody"))
            error = error or response.error
        if error:
            extra["error"] = error
        with self._lock:
            self._pending.append((int(time.time() * 1000), message, state, extra))

    def created(self, messages: list[Message]) -> None:
        """Record that ``messages`` were stored, each due at its ``due`` time."""
        for message in messages:
            self.record(message, "CREATED", next_delivery=message.due)

    def cancelled(self, messages: list[Message]) -> None:
        """Record the cancellation of pending ``messages`` (requested, then done)."""
        for message in messages:
            self.record(message, "CANCEL_REQUESTED")
            self.record(message, "CANCELED")

    # -- writing --------------------------------------------------------------------------

    def flush(self) -> None:
        """Write every recorded event now, then drop the oldest past ``MAX_EVENTS``."""
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            if len(self._known) > MAX_EVENTS:
                self._known.clear()
            known = self._known
            rows = [_row(at, msg, state, extra, known) for at, msg, state, extra in batch]
            with self.store.transaction() as db:
                db.executemany(
                    "INSERT INTO events (time, message_id, state, url, host, hostname, path,"
                    " topic, endpoint, queue, schedule, flow_key, caller_ip, labels, detail, body)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                db.execute(
                    "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?",
                    (MAX_EVENTS,),
                )

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_every):
            try:
                self.flush()
            except Exception:
                log.exception("writing events failed")

    # -- reading --------------------------------------------------------------------------

    def page(self, selection: filters.Selection) -> tuple[list[dict[str, Any]], str | None]:
        """Return the events ``selection`` names, newest first, and the next page's cursor."""
        self.flush()
        where, params = _where(selection)
        count = selection.count or DEFAULT_COUNT
        rows = self.store.query(
            "SELECT id, time, message_id, state, detail FROM events"
            f" WHERE {' AND '.join(where) or '1'} ORDER BY id DESC LIMIT ?",
            [*params, count + 1],
        )
        more = len(rows) > count
        rows = rows[:count]
        bodies = self._bodies({row[2] for row in rows})
        events = []
        for _id, at, message_id, state, detail in rows:
            event = {"time": at, "messageId": message_id, "state": state, **json.loads(detail)}
            if message_id in bodies:
                event["body"] = bodies[message_id]
            events.append(event)
        return events, (str(rows[-1][0]) if more else None)

    def _bodies(self, message_ids: set[str]) -> dict[str, str]:
        """Return the base64 body of each message whose ``CREATED`` event holds one."""
        if not message_ids:
            return {}
        marks = ",".join("?" * len(message_ids))
        rows = self.store.query(
            "SELECT message_id, body FROM events WHERE state = 'CREATED' AND body IS NOT NULL"
            f" AND message_id IN ({marks})",
            list(message_ids),
        )
        return {row[0]: base64.b64encode(bytes(row[1])).decode("ascii") for row in rows}


def _row(
    at: int,
    message: Message,
    state: str,
    extra: dict[str, Any],
    known: dict[str, tuple[str, tuple[Any, ...]]],
) -> tuple[Any, ...]:
    key = f"{message.id}/{message.retried}"
    made = known.get(key)
    if made is None:
        made = known[key] = _message_columns(message)
    opening, columns = made
    # The message's fields, then the event's: a name in both is read back with the event's
    # value (json.loads keeps the last), as {**detail, **extra} would have it.
    detail = opening + ("," + json.dumps(extra)[1:] if extra else "}")
    body = None
    if state == "CREATED":  # only the redacted form of a redacted body is ever written here
        body = redaction.body(message.body, message.spec.get("redact"))
        body = body if len(body) <= BODY_MAX else None
    return (at, message.id, state, *columns, detail, body)


def _message_columns(message: Message) -> tuple[str, tuple[Any, ...]]:
    """Return the detail JSON of ``message`` without its closing brace, and its columns."""
    spec = message.spec
    parts = urlsplit(spec["url"])
    hostname = (parts.hostname or "").lower()
    host = f"{hostname}:{parts.port}" if parts.port else hostname
    flow = spec.get("flowControl") or {}
    opening = json.dumps(message_detail(message))[:-1]  # never empty: it has messageId
    return opening, (
        spec["url"],
        host,
        hostname,
        parts.path or "/",
        spec.get("topicName"),
        spec.get("endpointName"),
        spec.get("queueName"),
        spec.get("scheduleId"),
        flow.get("key"),
        spec.get("callerIP"),
        json.dumps(labels(spec)),
    )


def _states(values: tuple[str, ...]) -> list[str]:
    states: list[str] = []
    for value in values:
        wanted = value.strip().upper()
        if wanted in STATE_ALIASES:
            states.extend(STATE_ALIASES[wanted])
        elif wanted in STATES:
            states.append(wanted)
        else:
            known = ", ".join(sorted(STATES | set(STATE_ALIASES)))
            raise bad_request(f"unknown state {value!r}: one of {known}")
    return states


def _where(selection: filters.Selection) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []

    def any_of(column: str, values: Any) -> None:
        values = list(values)
        where.append(f"{column} IN ({','.join('?' * len(values))})")
        params.extend(values)

    if selection.ids is not None:
        any_of("message_id", selection.ids)
    for field, values in selection.filters.items():
        if field == "state":
            any_of("state", _states(values))
        elif field == "fromDate":
            where.append("time >= ?")
            params.append(int(values[0]))
        elif field == "toDate":
            where.append("time <= ?")
            params.append(int(values[0]))
        elif field == "label":
            marks = ",".join("?" * len(values))
            where.append(f"EXISTS (SELECT 1 FROM json_each(labels) WHERE value IN ({marks}))")
            params.extend(values)
        elif field == "host":
            lowered = [value.lower() for value in values]
            marks = ",".join("?" * len(lowered))
            where.append(f"(host IN ({marks}) OR hostname IN ({marks}))")
            params.extend(lowered * 2)
        else:
            any_of(COLUMNS[field], values)
    if selection.cursor is not None:
        where.append("id < ?")
        params.append(selection.cursor)
    return where, params


def list_view(server: DevServer, request: Request) -> Response:
    """``GET /v2/events`` and ``GET /v2/logs``: one page of events, newest first."""
    selection = filters.parse(request, EVENTS)
    events, cursor = server.dispatcher.events.page(selection)
    answer: dict[str, Any] = {"events": events}
    if cursor is not None:
        answer["cursor"] = cursor
    return Response(json.dumps(answer), mimetype="application/json")
