"""The QStash v2 REST API of the dev server, as a plain WSGI application.

Destinations are full URLs inside the path (``/v2/publish/https://host/path?query``), which
a router would mangle (merged slashes, decoded escapes), so requests are matched here on
the raw request URI with a small route table. Every answer is JSON; errors are QStash's
``{"error": "..."}`` with its status codes.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from app.devserver import views
from app.devserver.publish import (
    APIError,
    Clock,
    PublishHeaders,
    bad_request,
    check_destination,
    new_message,
)
from app.devserver.scheduler import next_fire
from app.devserver.store import Message, Schedule, new_id
from app.devserver.timing import parse_duration
from app.errors import JobDefinitionError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from app.devserver.server import DevServer

Handler = Callable[..., Any]
MAX_BODY = 10 * 1024 * 1024
_QUEUE_NAME = re.compile(r"[A-Za-z0-9._~-]{1,128}")


def raw_target(request: Request) -> tuple[str, str]:
    """Return the request's path and query exactly as sent, undecoded."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if not raw:
        return request.path, request.query_string.decode("latin-1")
    path, _, query = raw.partition("?")
    return path, query


def destination_of(rest: str, query: str) -> str:
    """Return the destination URL carried by the path ``rest`` and the query."""
    if "://" not in rest and "://" in unquote(rest):
        rest = unquote(rest)  # curl users sometimes percent-encode the whole URL
    return rest + ("?" + query if query else "")


def json_response(data: Any, status: int = 200) -> Response:
    """Return ``data`` as a JSON response."""
    return Response(json.dumps(data), status=status, mimetype="application/json")


class API:
    """The WSGI app: authentication, routing, and one method per REST call."""

    def __init__(self, server: DevServer) -> None:
        self.server = server
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"/v2/keys"), self.keys),
            ("POST", re.compile(r"/v2/publish/(?P<rest>.+)"), self.publish),
            ("POST", re.compile(r"/v2/enqueue/(?P<queue>[^/]+)/(?P<rest>.+)"), self.enqueue),
            ("POST", re.compile(r"/v2/batch"), self.batch),
            ("GET", re.compile(r"/v2/messages/(?P<id>[^/]+)"), self.get_message),
            ("DELETE", re.compile(r"/v2/messages/(?P<id>[^/]+)"), self.cancel_message),
            ("DELETE", re.compile(r"/v2/messages"), self.cancel_messages),
            ("GET", re.compile(r"/v2/schedules"), self.list_schedules),
            (
                "PATCH|POST",
                re.compile(r"/v2/schedules/(?P<id>[^/:]+)/(?P<act>pause|resume)"),
                self.pause_schedule,
            ),
            ("POST", re.compile(r"/v2/schedules/(?P<rest>.+://.*)"), self.create_schedule),
            ("GET", re.compile(r"/v2/schedules/(?P<id>[^/]+)"), self.get_schedule),
            ("DELETE", re.compile(r"/v2/schedules/(?P<id>[^/]+)"), self.delete_schedule),
            ("POST", re.compile(r"/v2/queues/?"), self.upsert_queue),
            ("GET", re.compile(r"/v2/queues/?"), self.list_queues),
            (
                "POST",
                re.compile(r"/v2/queues/(?P<name>[^/]+)/(?P<act>pause|resume)"),
                self.pause_queue,
            ),
            ("GET", re.compile(r"/v2/queues/(?P<name>[^/]+)"), self.get_queue),
            ("DELETE", re.compile(r"/v2/queues/(?P<name>[^/]+)"), self.delete_queue),
            ("GET", re.compile(r"/v2/dlq/?"), self.list_dlq),
            ("DELETE", re.compile(r"/v2/dlq/?"), self.delete_dlq_many),
            ("POST", re.compile(r"/v2/dlq/retry/?"), self.retry_dlq_many),
            ("POST", re.compile(r"/v2/dlq/retry/(?P<id>[^/]+)"), self.retry_dlq),
            ("GET", re.compile(r"/v2/dlq/(?P<id>[^/]+)"), self.get_dlq),
            ("DELETE", re.compile(r"/v2/dlq/(?P<id>[^/]+)"), self.delete_dlq),
        ]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = MAX_BODY
        try:
            response = self.dispatch(request)
        except APIError as exc:
            response = json_response({"error": exc.message}, exc.status)
        except HTTPException as exc:  # e.g. a body over MAX_BODY
            response = json_response({"error": exc.description or exc.name}, exc.code or 400)
        except Exception:
            self.server.log.exception(
                "dev server API failed on %s %s", request.method, request.path
            )
            response = json_response({"error": "internal error in the dev server"}, 500)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        """Authenticate ``request`` and run the view its method and path route to."""
        path, query = raw_target(request)
        matched_path = False
        for methods, pattern, handler in self.routes:
            match = pattern.fullmatch(path.rstrip("/") or "/") or pattern.fullmatch(path)
            if match is None:
                continue
            matched_path = True
            if request.method not in methods.split("|"):
                continue
            self.authenticate(request)
            args = {
                k: unquote(v) if k not in ("rest",) else v for k, v in match.groupdict().items()
            }
            if "rest" in args:
                args["destination"] = destination_of(args.pop("rest"), query)
            result: Response = handler(request, **args)
            return result
        if matched_path:
            raise APIError(405, f"method {request.method} not allowed on {path}")
        raise APIError(404, f"no such endpoint: {request.method} {path}")

    def authenticate(self, request: Request) -> None:
        """Require ``Authorization: Bearer <token>`` with the server's token."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise APIError(401, "authorization header is missing")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(401, "authorization header must be 'Bearer <QSTASH_TOKEN>'")
        if not hmac.compare_digest(token.strip().encode(), self.server.token.encode()):
            raise APIError(401, "invalid token")

    # -- publishing ---------------------------------------------------------------------

    def clock(self) -> Clock:
        """Return the current time and the server's time scale."""
        return Clock(time.time(), self.server.time_scale)

    def _accept(self, items: list[tuple[Message, str | None]]) -> list[dict[str, Any]]:
        server = self.server
        answers = server.store.publish(items, now=time.time(), window=server.dedup_window)
        fresh = [msg for (msg, _), (_, dup) in zip(items, answers, strict=True) if not dup]
        for msg in fresh:
            if msg.spec["queueName"]:
                server.ensure_queue(msg.spec["queueName"])
        server.dispatcher.push(fresh)
        return [
            {"messageId": mid, **({"deduplicated": True} if dup else {})} for mid, dup in answers
        ]

    def _one(self, request: Request, destination: str, queue: str | None) -> Response:
        if queue is not None and not _QUEUE_NAME.fullmatch(queue):
            raise bad_request(f"invalid queue name {queue!r}")
        item = new_message(
            destination,
            PublishHeaders(request.headers.items()),
            request.get_data(),
            clock=self.clock(),
            caller_ip=request.remote_addr or "",
            queue=queue,
        )
        answer = self._accept([item])[0]
        return json_response(answer, 202 if answer.get("deduplicated") else 201)

    def publish(self, request: Request, destination: str) -> Response:
        """``POST /v2/publish/{destination}``."""
        return self._one(request, destination, request.headers.get("Upstash-Queue-Name"))

    def enqueue(self, request: Request, queue: str, destination: str) -> Response:
        """``POST /v2/enqueue/{queue}/{destination}``."""
        return self._one(request, destination, queue)

    def batch(self, request: Request) -> Response:
        """``POST /v2/batch``: validate every item first, then accept them atomically."""
        entries = _json_body(request)
        if not isinstance(entries, list) or not entries:
            raise bad_request("the batch body must be a non-empty JSON array")
        items = [self._batch_item(request, index, entry) for index, entry in enumerate(entries)]
        return json_response(self._accept(items), 201)

    def _batch_item(self, request: Request, index: int, entry: Any) -> tuple[Message, str | None]:
        if not isinstance(entry, dict) or not isinstance(entry.get("destination"), str):
            raise bad_request(f"batch item {index}: needs a 'destination' string")
        headers = entry.get("headers") or {}
        body = entry.get("body") or ""
        queue = entry.get("queue")
        if not isinstance(headers, dict) or not isinstance(body, str):
            raise bad_request(f"batch item {index}: 'headers' must be an object, 'body' a string")
        if queue is not None and (not isinstance(queue, str) or not _QUEUE_NAME.fullmatch(queue)):
            raise bad_request(f"batch item {index}: invalid queue name {queue!r}")
        try:
            return new_message(
                entry["destination"],
                PublishHeaders((str(k), str(v)) for k, v in headers.items()),
                body.encode("utf-8"),
                clock=self.clock(),
                caller_ip=request.remote_addr or "",
                queue=queue,
            )
        except APIError as exc:
            raise APIError(exc.status, f"batch item {index}: {exc.message}") from None

    # -- messages -----------------------------------------------------------------------

    def get_message(self, request: Request, id: str) -> Response:
        """``GET /v2/messages/{id}``: a message not yet delivered."""
        message = self.server.store.load(id)
        if message is None:
            raise APIError(404, f"message {id} not found")
        return json_response(views.message(message))

    def cancel_message(self, request: Request, id: str) -> Response:
        """``DELETE /v2/messages/{id}``."""
        if not self.server.store.cancel([id]):
            raise APIError(404, f"message {id} not found")
        self.server.dispatcher.cancel([id])
        return json_response({"cancelled": 1}, 202)

    def cancel_messages(self, request: Request) -> Response:
        """``DELETE /v2/messages``: the ids of a JSON body or the query; all without ids."""
        ids = _ids(request, "messageIds")
        cancelled = self.server.store.cancel(ids)
        self.server.dispatcher.cancel(cancelled)
        return json_response({"cancelled": len(cancelled)})

    # -- schedules ----------------------------------------------------------------------

    def create_schedule(self, request: Request, destination: str) -> Response:
        """``POST /v2/schedules/{destination}``: create, or upsert by Upstash-Schedule-Id."""
        server, headers = self.server, PublishHeaders(request.headers.items())
        cron = headers.get("Upstash-Cron")
        if not cron:
            raise bad_request("the Upstash-Cron header is required")
        try:
            next_at = next_fire(cron, time.time(), server.time_scale)
        except JobDefinitionError as exc:
            raise bad_request(f"invalid cron: {exc}") from None
        item, _ = new_message(
            destination,
            headers,
            request.get_data(),
            clock=self.clock(),
            caller_ip=request.remote_addr or "",
        )
        spec = dict(item.spec, cron=cron.strip(), queueName=headers.get("Upstash-Queue-Name"))
        spec["delay"] = (
            parse_duration(headers["Upstash-Delay"]) if "Upstash-Delay" in headers else 0
        )
        schedule_id = (headers.get("Upstash-Schedule-Id") or "").strip() or new_id("scd")
        if not _QUEUE_NAME.fullmatch(schedule_id):
            raise bad_request(f"invalid Upstash-Schedule-Id {schedule_id!r}")
        existing = server.store.schedule(schedule_id)
        server.store.upsert_schedule(
            Schedule(
                schedule_id,
                spec,
                item.body,
                existing.paused if existing else False,
                existing.created if existing else time.time(),
                next_at,
                existing.last_at if existing else None,
            )
        )
        server.scheduler.changed()
        return json_response({"scheduleId": schedule_id}, 201)

    def list_schedules(self, request: Request) -> Response:
        """``GET /v2/schedules``."""
        return json_response([views.schedule(s) for s in self.server.store.schedules()])

    def _schedule(self, id: str) -> Schedule:
        schedule = self.server.store.schedule(id)
        if schedule is None:
            raise APIError(404, f"schedule {id} not found")
        return schedule

    def get_schedule(self, request: Request, id: str) -> Response:
        """``GET /v2/schedules/{id}``."""
        return json_response(views.schedule(self._schedule(id)))

    def delete_schedule(self, request: Request, id: str) -> Response:
        """``DELETE /v2/schedules/{id}``."""
        if not self.server.store.delete_schedule(id):
            raise APIError(404, f"schedule {id} not found")
        return json_response({})

    def pause_schedule(self, request: Request, id: str, act: str) -> Response:
        """``PATCH|POST /v2/schedules/{id}/pause|resume``."""
        schedule = self._schedule(id)
        next_at = next_fire(schedule.spec["cron"], time.time(), self.server.time_scale)
        self.server.store.pause_schedule(id, act == "pause", next_at)
        self.server.scheduler.changed()
        return json_response({})

    # -- queues -------------------------------------------------------------------------

    def upsert_queue(self, request: Request) -> Response:
        """``POST /v2/queues`` ``{"queueName", "parallelism", "paused"?}``."""
        data = _json_body(request)
        if not isinstance(data, dict):
            raise bad_request("the body must be a JSON object with queueName and parallelism")
        name, parallelism = data.get("queueName"), data.get("parallelism", 1)
        if not isinstance(name, str) or not _QUEUE_NAME.fullmatch(name):
            raise bad_request(f"invalid queueName {name!r}")
        if not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 1:
            raise bad_request(f"parallelism must be an integer >= 1, not {parallelism!r}")
        paused = data.get("paused", False)
        if not isinstance(paused, bool):
            raise bad_request("paused must be true or false")
        self.server.set_queue(name, parallelism, paused)
        return json_response({})

    def list_queues(self, request: Request) -> Response:
        """``GET /v2/queues``."""
        store = self.server.store
        return json_response([views.queue(q, store.lag(q.name)) for q in store.queues()])

    def get_queue(self, request: Request, name: str) -> Response:
        """``GET /v2/queues/{name}``."""
        queue = self.server.store.queue(name)
        if queue is None:
            raise APIError(404, f"queue {name} not found")
        return json_response(views.queue(queue, self.server.store.lag(name)))

    def delete_queue(self, request: Request, name: str) -> Response:
        """``DELETE /v2/queues/{name}``."""
        if not self.server.store.delete_queue(name):
            raise APIError(404, f"queue {name} not found")
        return json_response({})

    def pause_queue(self, request: Request, name: str, act: str) -> Response:
        """``POST /v2/queues/{name}/pause|resume``."""
        queue = self.server.store.queue(name)
        if queue is None:
            raise APIError(404, f"queue {name} not found")
        self.server.set_queue(name, queue.parallelism, act == "pause")
        return json_response({})

    # -- dead-letter queue --------------------------------------------------------------

    def list_dlq(self, request: Request) -> Response:
        """``GET /v2/dlq`` with ``cursor`` and ``count``."""
        count = _count(request.args.get("count"))
        cursor = request.args.get("cursor") or None
        entries = self.server.store.dead_letters(after=cursor, limit=count + 1)
        answer: dict[str, Any] = {"messages": [views.dead_letter(e) for e in entries[:count]]}
        if len(entries) > count:
            answer["cursor"] = entries[count - 1].dlq_id
        return json_response(answer)

    def get_dlq(self, request: Request, id: str) -> Response:
        """``GET /v2/dlq/{dlqId}``."""
        entry = self.server.store.dead_letter_by_id(id)
        if entry is None:
            raise APIError(404, f"dlq message {id} not found")
        return json_response(views.dead_letter(entry))

    def delete_dlq(self, request: Request, id: str) -> Response:
        """``DELETE /v2/dlq/{dlqId}``."""
        if not self.server.store.delete_dead_letters([id]):
            raise APIError(404, f"dlq message {id} not found")
        return json_response({})

    def delete_dlq_many(self, request: Request) -> Response:
        """``DELETE /v2/dlq`` with ``dlqIds`` in the query or a JSON body."""
        ids = _ids(request, "dlqIds")
        if ids is None:
            ids = [entry.dlq_id for entry in self.server.store.dead_letters(limit=1_000_000)]
        return json_response({"deleted": self.server.store.delete_dead_letters(ids)})

    def retry_dlq(self, request: Request, id: str) -> Response:
        """``POST /v2/dlq/retry/{dlqId}``: publish the message again, as a new message."""
        return json_response(self._retry(id), 202)

    def retry_dlq_many(self, request: Request) -> Response:
        """``POST /v2/dlq/retry`` with ``dlqIds``."""
        ids = _ids(request, "dlqIds") or []
        return json_response({"responses": [self._retry(i) for i in ids]}, 202)

    def _retry(self, dlq_id: str) -> dict[str, str]:
        store = self.server.store
        entry = store.dead_letter_by_id(dlq_id)
        if entry is None:
            raise APIError(404, f"dlq message {dlq_id} not found")
        clock = self.clock()
        spec = {**entry.message.spec, "createdAt": int(clock.now * 1000), "notBefore": 0}
        spec.pop("retried", None)
        message = Message(new_id("msg"), spec, entry.message.body, 0, clock.now)
        if not store.retry_dead_letter(dlq_id, message, clock.now):
            raise APIError(404, f"dlq message {dlq_id} not found")
        self.server.dispatcher.push([message])
        return {"messageId": message.id}

    # -- keys ---------------------------------------------------------------------------

    def keys(self, request: Request) -> Response:
        """``GET /v2/keys``: the signing keys deliveries are signed with."""
        return json_response({"current": self.server.current_key, "next": self.server.next_key})


def _json_body(request: Request) -> Any:
    raw = request.get_data()
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        raise bad_request("the body is not valid JSON") from None


def _ids(request: Request, name: str) -> list[str] | None:
    query = parse_qs(request.query_string.decode("latin-1")).get(name)
    if query:
        return query
    data = _json_body(request)
    if isinstance(data, dict) and name in data:
        ids = data[name]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise bad_request(f"{name} must be an array of strings")
        return ids
    return None


def _count(raw: str | None) -> int:
    if raw is None:
        return 100
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise bad_request(f"count must be an integer 1-1000, not {raw!r}")
    return int(raw)


__all__ = ["API", "check_destination"]
