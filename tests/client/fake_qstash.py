"""A small QStash-compatible REST server on 127.0.0.1 that records every request.

It keeps just enough state (messages with deduplication, schedules, queues, DLQ) for the
client's calls to be answered as QStash answers them, and can fail on purpose:
``fail_next`` answers with a chosen status, ``drop_next`` processes a request and then
closes the connection without answering (a response lost on the way back).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from app.qstash.client.expressions import duration_seconds
from tests.servers import serving

TOKEN = "test-token-0123456789"
KEYS = {"current": "sig_current_key", "next": "sig_next_key"}


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        """The request target without its query string."""
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        """The parsed query string."""
        return parse_qs(urlsplit(self.target).query)

    @property
    def upstash(self) -> dict[str, str]:
        """The ``Upstash-*`` headers and ``Content-Type``, names lower-cased."""
        return {
            k: v for k, v in self.headers.items() if k.startswith("upstash-") or k == "content-type"
        }

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class State:
    """What the fake QStash holds."""

    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    dedup: dict[str, str] = field(default_factory=dict)
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    dlq: dict[str, dict[str, Any]] = field(default_factory=dict)


class FakeQStash:
    """The server's controls and records; ``url`` is its base URL."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.state = State()
        self.failures: list[tuple[int, dict[str, str], dict[str, Any]]] = []
        self.drops = 0
        self.url = ""
        self._ids = itertools.count(1)
        self.lock = threading.Lock()

    def next_id(self, prefix: str) -> str:
        """Return a fresh id like ``msg_7``."""
        return f"{prefix}_{next(self._ids)}"

    def fail_next(self, status: int, *, headers: dict[str, str] | None = None, times: int = 1,
                  error: str = "injected failure") -> None:  # fmt: skip
        """Answer the next ``times`` requests with ``status`` (without processing them)."""
        self.failures.extend([(status, headers or {}, {"error": error})] * times)

    def drop_next(self, times: int = 1) -> None:
        """Process the next ``times`` requests, then close the connection unanswered."""
        self.drops += times

    def last(self) -> Recorded:
        """Return the last request received."""
        return self.requests[-1]

    def add_schedule(self, schedule_id: str, destination: str, cron: str, **extra: Any) -> None:
        """Put a schedule into the server's state, as if created earlier."""
        self.state.schedules[schedule_id] = {
            "scheduleId": schedule_id, "destination": destination, "cron": cron,
            "method": "POST", "retries": 3, "createdAt": int(time.time() * 1000),
            "isPaused": False, **extra,
        }  # fmt: skip


def _publish(fake: FakeQStash, destination: str, headers: dict[str, str], body: str,
             queue: str | None) -> tuple[int, dict[str, Any]]:  # fmt: skip
    dedup = headers.get("upstash-deduplication-id")
    if dedup is not None and dedup in fake.state.dedup:
        return 202, {"messageId": fake.state.dedup[dedup], "deduplicated": True}
    message_id = fake.next_id("msg")
    fake.state.messages[message_id] = {
        "messageId": message_id, "url": destination, "body": body, "queueName": queue,
        "header": {k: [v] for k, v in headers.items()}, "method": "POST",
        "maxRetries": int(headers.get("upstash-retries", 3)), "notBefore": 0, "createdAt": 0,
    }  # fmt: skip
    if dedup is not None:
        fake.state.dedup[dedup] = message_id
    return 201, {"messageId": message_id}


def _route(fake: FakeQStash, req: Recorded) -> tuple[int, Any]:  # noqa: C901 - a router
    method, path, h, state = req.method, req.path, req.headers, fake.state
    parts = path.split("/", 3)[1:]  # "", "v2", resource, rest
    resource = parts[1] if len(parts) > 1 else ""
    rest = unquote(req.target.split(f"/v2/{resource}/", 1)[1]) if len(parts) > 2 else ""
    if method == "POST" and resource == "publish" and "://" not in rest:  # a URL group
        urls = [f"https://{rest}.example/{n}" for n in (1, 2)]
        return 201, [{**_publish(fake, url, h, req.body.decode(), None)[1], "url": url}
                     for url in urls]  # fmt: skip
    if method == "POST" and resource == "publish":
        return _publish(fake, rest, h, req.body.decode(), None)
    if method == "POST" and resource == "enqueue":
        queue, _, destination = rest.partition("/")
        state.queues.setdefault(queue, {"name": queue, "parallelism": 1, "paused": False, "lag": 0})
        return _publish(fake, destination, h, req.body.decode(), queue)
    if method == "POST" and resource == "batch":
        answers = []
        for entry in req.json():
            headers = {k.lower(): v for k, v in entry.get("headers", {}).items()}
            answers.append(_publish(fake, entry["destination"], headers, entry["body"],
                                    entry.get("queue"))[1])  # fmt: skip
        return 200, answers
    if resource == "messages":
        if method == "DELETE" and not rest:
            ids = req.json()["messageIds"]
            return 200, {"cancelled": sum(state.messages.pop(i, None) is not None for i in ids)}
        if rest not in state.messages:
            return 404, {"error": "message not found"}
        return (200, state.messages[rest]) if method == "GET" else (200, state.messages.pop(rest))
    if resource == "schedules":
        return _schedules(fake, method, rest, h, req.body.decode())
    if resource == "queues":
        return _queues(fake, method, rest, req)
    if resource == "dlq":
        return _dlq(fake, method, rest, req)
    if method == "GET" and resource == "keys":
        return 200, KEYS
    return 404, {"error": f"no route {method} {path}"}


def _schedules(fake: FakeQStash, method: str, rest: str, h: dict[str, str],
               body: str) -> tuple[int, Any]:  # fmt: skip
    schedules = fake.state.schedules
    if method == "GET" and not rest:
        return 200, list(schedules.values())
    if method == "POST" and "://" in rest:
        schedule_id = h.get("upstash-schedule-id") or fake.next_id("scd")
        created = schedules.get(schedule_id, {}).get("createdAt", int(time.time() * 1000))
        schedules[schedule_id] = {
            "scheduleId": schedule_id, "destination": rest, "cron": h["upstash-cron"],
            "method": h.get("upstash-method", "POST"), "body": body,
            "retries": int(h.get("upstash-retries", 3)), "createdAt": created,
            "callback": h.get("upstash-callback"),
            "failureCallback": h.get("upstash-failure-callback"),
            "retryDelayExpression": h.get("upstash-retry-delay"),
            "timeout": duration_seconds(h["upstash-timeout"]) if "upstash-timeout" in h else None,
            "queueName": h.get("upstash-queue-name"), "isPaused": False,
        }  # fmt: skip
        return 200, {"scheduleId": schedule_id}
    schedule_id, _, action = rest.partition("/")
    if schedule_id not in schedules:
        return 404, {"error": "schedule not found"}
    if method == "GET":
        return 200, schedules[schedule_id]
    if method == "DELETE":
        del schedules[schedule_id]
        return 200, None
    if method == "POST" and action in ("pause", "resume"):
        schedules[schedule_id]["isPaused"] = action == "pause"
        return 200, None
    return 405, {"error": "method not allowed"}


def _queues(fake: FakeQStash, method: str, rest: str, req: Recorded) -> tuple[int, Any]:
    queues = fake.state.queues
    if method == "POST" and not rest:
        data = req.json()
        queue = queues.setdefault(data["queueName"], {"name": data["queueName"], "lag": 0,
                                                      "paused": False})  # fmt: skip
        queue["parallelism"] = data.get("parallelism", 1)
        queue["paused"] = data.get("paused", queue["paused"])
        return 200, None
    if method == "GET" and not rest:
        return 200, list(queues.values())
    name, _, action = rest.partition("/")
    if name not in queues:
        return 404, {"error": "queue not found"}
    if method == "GET":
        return 200, queues[name]
    if method == "DELETE":
        del queues[name]
        return 200, None
    queues[name]["paused"] = action == "pause"
    return 200, None


def _dlq(fake: FakeQStash, method: str, rest: str, req: Recorded) -> tuple[int, Any]:
    dlq = fake.state.dlq
    if method == "GET" and not rest:
        count = int(req.query.get("count", ["100"])[0])
        return 200, {"messages": list(dlq.values())[:count]}
    if method == "DELETE" and not rest:
        ids = req.json()["dlqIds"]
        return 200, {"deleted": sum(dlq.pop(i, None) is not None for i in ids)}
    if method == "POST" and rest.startswith("retry/"):
        entry = dlq.pop(rest.removeprefix("retry/"), None)
        if entry is None:
            return 404, {"error": "dlq message not found"}
        return _publish(fake, entry["url"], req.headers, entry.get("body", ""), None)
    if rest not in dlq:
        return 404, {"error": "dlq message not found"}
    return (200, dlq[rest]) if method == "GET" else (200, dlq.pop(rest))


def _handler(fake: FakeQStash) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stalls

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            req = Recorded(self.command, self.path, headers, body)
            with fake.lock:
                fake.requests.append(req)
                status, answer, extra = self._answer(req)
                drop = fake.drops > 0
                fake.drops -= drop
            if drop:
                self.close_connection = True
                self.connection.close()
                return
            payload = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _answer(self, req: Recorded) -> tuple[int, Any, dict[str, str]]:
            if req.headers.get("authorization") != f"Bearer {TOKEN}":
                return 401, {"error": "unauthorized"}, {}
            if fake.failures:
                status, headers, answer = fake.failures.pop(0)
                return status, answer, headers
            status, answer = _route(fake, req)
            return status, answer, {}

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

    return Handler


@contextmanager
def running() -> Iterator[FakeQStash]:
    """Run a fake QStash on a free port of 127.0.0.1 for the duration of the block."""
    fake = FakeQStash()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    with serving(server):
        yield fake
