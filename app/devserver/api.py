"""The QStash v2 REST API of the dev server, as a plain WSGI application.

Destinations are full URLs inside the path (``/v2/publish/https://host/path?query``), which
a router would mangle (merged slashes, decoded escapes), so requests are matched here on
the raw request URI with a small route table. Every answer is JSON; errors are QStash's
``{"error": "..."}`` with its status codes.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from app.devserver import events, filters, flow, groups, views, waiters, workflows
from app.devserver.api_resources import (
    QUEUE_NAME,
    ResourceViews,
    json_body,
    json_response,
)
from app.devserver.publish import (
    APIError,
    PublishHeaders,
    bad_request,
    header_pairs,
    new_message,
)
from app.devserver.records import Message

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from app.devserver.server import DevServer

Handler = Callable[..., Any]
MAX_BODY = 10 * 1024 * 1024
#: The most messages one batch may publish: each costs memory and a row at once.
MAX_BATCH = 1000


def raw_target(request: Request) -> tuple[str, str]:
    """Return the request's path and query exactly as sent, undecoded."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if not raw:
        return request.path, request.query_string.decode("latin-1")
    path, _, query = raw.partition("?")
    return path, query


def read_body(request: Request) -> bytes:
    """Read and cache the body (``get_data()`` returns it after); 413 past ``MAX_BODY``."""
    # werkzeug cuts a chunked body off at max_content_length without a word: read one
    # byte past the limit to tell a body of the limit from a longer one.
    request.max_content_length = MAX_BODY + 1
    too_large = APIError(413, f"the body is larger than the API's limit of {MAX_BODY} bytes")
    if (request.content_length or 0) > MAX_BODY:
        raise too_large
    body = request.get_data(cache=True)
    if len(body) > MAX_BODY:
        raise too_large
    return body


def batch_fields(entry: Any) -> tuple[str, dict[str, Any], str, str | None]:
    """Return a batch item's destination, headers, body and queue; 400 if mistyped.

    ``null`` stands for an absent field, as the official Python SDK sends it.
    """
    if not isinstance(entry, dict) or not isinstance(entry.get("destination"), str):
        raise bad_request("needs a 'destination' string")
    headers = entry.get("headers")
    body = entry.get("body")
    queue = entry.get("queue")
    if not isinstance(headers, dict | None):
        raise bad_request("'headers' must be an object")
    if not isinstance(body, str | None):
        raise bad_request("'body' must be a string")
    if queue is not None and (not isinstance(queue, str) or not QUEUE_NAME.fullmatch(queue)):
        raise bad_request(f"invalid queue name {queue!r}")
    return entry["destination"], headers or {}, body or "", queue


def destination_of(rest: str, query: str) -> str:
    """Return the destination URL carried by the path ``rest`` and the query."""
    if "://" not in rest and "://" in unquote(rest):
        rest = unquote(rest)  # curl users sometimes percent-encode the whole URL
    return rest + ("?" + query if query else "")


class API(ResourceViews):
    """The WSGI app: authentication, routing, and one method per REST call."""

    def __init__(self, server: DevServer) -> None:
        self.server = server
        groups.install(server.store)
        self.workflows = workflows.Runs()
        self.workflows.restore(server.store.pending())
        server.on_attempt(self.workflows.on_attempt)
        self.waiters = waiters.Waiters(server, self.workflows, self._accept)
        self.workflows.on_end.append(lambda run: self.waiters.forget({run.id}))
        self.workflows.on_end.append(self._answer_invoker)
        self.workflows.on_failed.append(self._answer_invoker)
        topic = r"/v2/topics/(?P<name>[^/]+)"
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"/v2/keys"), self.keys),
            ("GET", re.compile(r"/v2/(?:events|logs)"), self.list_events),
            ("GET", re.compile(r"/v2/flowControl/?"), partial(flow.list_view, server)),
            ("GET", re.compile(r"/v2/flowControl/(?P<key>[^/]+)"), partial(flow.get_view, server)),
            (
                "POST",
                re.compile(
                    r"/v2/flowControl/(?P<key>[^/]+)/(?P<act>pause|resume|pin|unpin|resetRate)"
                ),
                partial(flow.act, server),
            ),
            ("GET", re.compile(r"/v2/globalParallelism"), partial(flow.global_view, server)),
            ("POST", re.compile(topic + "/endpoints"), partial(groups.add_endpoints, server)),
            ("DELETE", re.compile(topic + "/endpoints"), partial(groups.remove_endpoints, server)),
            ("GET", re.compile(r"/v2/topics/?"), partial(groups.list_groups, server)),
            ("GET", re.compile(topic), partial(groups.get_group, server)),
            ("DELETE", re.compile(topic), partial(groups.delete_group, server)),
            (
                "GET",
                re.compile(r"/v2/workflows/runs/(?P<run_id>[^/]+)"),
                partial(workflows.run_steps, self.workflows),
            ),
            (
                "DELETE",
                re.compile(r"/v2/workflows/runs/(?P<run_id>[^/]+)"),
                partial(workflows.delete_run, server, self.workflows),
            ),
            (
                "DELETE",
                re.compile(r"/v2/workflows/runs"),
                partial(workflows.cancel_runs, server, self.workflows),
            ),
            (
                "GET",
                re.compile(r"/v2/workflows/(?:logs|events)"),
                partial(workflows.list_logs, self.workflows),
            ),
            ("POST", re.compile(r"/v2/wait/(?P<event_id>[^/]+)"), self.waiters.wait),
            (
                "POST",
                re.compile(r"/v2/notify/(?P<run_id>[^/]+)/(?P<event_id>[^/]+)"),
                self.waiters.notify_run,
            ),
            ("POST", re.compile(r"/v2/notify/(?P<event_id>[^/]+)"), self.waiters.notify),
            ("GET", re.compile(r"/v2/waiters/(?P<event_id>[^/]+)"), self.waiters.list_waiters),
            *(
                ("GET|POST|PUT|PATCH|DELETE", re.compile(path), workflows.not_implemented)
                for path in workflows.NOT_IMPLEMENTED
            ),
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
            ("POST", re.compile(r"/v2/schedules/(?P<name>[^/]+)"), groups.schedule_to_group),
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
            ("GET", re.compile(r"/v2/dlq/?"), partial(workflows.dlq_list, self.list_dlq)),
            ("DELETE", re.compile(r"/v2/dlq/?"), self.delete_dlq_many),
            ("POST", re.compile(r"/v2/dlq/retry/?"), self.retry_dlq_many),
            ("POST", re.compile(r"/v2/dlq/retry/(?P<id>[^/]+)"), self.retry_dlq),
            ("GET", re.compile(r"/v2/dlq/(?P<id>[^/]+)"), self.get_dlq),
            ("DELETE", re.compile(r"/v2/dlq/(?P<id>[^/]+)"), self.delete_dlq),
        ]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            read_body(request)
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
            # The raw path first: a destination's trailing slash is part of its URL.
            match = pattern.fullmatch(path) or pattern.fullmatch(path.rstrip("/") or "/")
            if match is None:
                continue
            matched_path = True
            if request.method not in methods.split("|"):
                continue
            self.authenticate(request)
            args = match.groupdict()
            rest = args.pop("rest", None)
            args = {name: unquote(value) for name, value in args.items()}
            if rest is not None:
                args["destination"] = destination_of(rest, query)
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

    def _accept(self, items: list[tuple[Message, str | None]]) -> list[dict[str, Any]]:
        server = self.server
        prepared = self.workflows.prepare([msg for msg, _ in items])
        items = [(msg, key) for msg, (_, key) in zip(prepared, items, strict=True)]
        answers = server.store.publish(items, now=time.time(), window=server.dedup_window)
        fresh = [msg for (msg, _), (_, dup) in zip(items, answers, strict=True) if not dup]
        for msg in fresh:
            if msg.spec["queueName"]:
                server.ensure_queue(msg.spec["queueName"])
        server.dispatcher.events.created(fresh)
        server.dispatcher.push(fresh)
        return [
            {"messageId": mid, **({"deduplicated": True} if dup else {})} for mid, dup in answers
        ]

    def _one(self, request: Request, destination: str, queue: str | None) -> Response:
        if queue is not None and not QUEUE_NAME.fullmatch(queue):
            raise bad_request(f"invalid queue name {queue!r}")
        headers = PublishHeaders(request.headers.items())
        fanout = groups.expand(
            self.server.store,
            destination,
            lambda url: new_message(
                url,
                headers,
                request.get_data(),
                clock=self.clock(),
                caller_ip=request.remote_addr or "",
                queue=queue,
            ),
        )
        answer = fanout.answer(self._accept(fanout.items))
        duplicate = isinstance(answer, dict) and answer.get("deduplicated")
        return json_response(answer, 202 if duplicate else 201)

    def publish(self, request: Request, destination: str) -> Response:
        """``POST /v2/publish/{destination}``."""
        return self._one(request, destination, request.headers.get("Upstash-Queue-Name"))

    def enqueue(self, request: Request, queue: str, destination: str) -> Response:
        """``POST /v2/enqueue/{queue}/{destination}``."""
        return self._one(request, destination, queue)

    def batch(self, request: Request) -> Response:
        """``POST /v2/batch``: validate every item first, then accept them atomically."""
        entries = json_body(request)
        if not isinstance(entries, list) or not entries:
            raise bad_request("the batch body must be a non-empty JSON array")
        if len(entries) > MAX_BATCH:
            raise bad_request(f"a batch holds at most {MAX_BATCH} messages, not {len(entries)}")
        fanouts = [self._batch_item(request, index, entry) for index, entry in enumerate(entries)]
        items = [item for fanout in fanouts for item in fanout.items]
        if len(items) > MAX_BATCH:
            raise bad_request(
                f"a batch holds at most {MAX_BATCH} messages, not {len(items)} (URL groups"
                " fan out to one message per endpoint)"
            )
        return json_response(groups.answers(fanouts, self._accept(items)), 201)

    def _batch_item(self, request: Request, index: int, entry: Any) -> groups.Fanout:
        try:
            destination, headers, body, queue = batch_fields(entry)
            return groups.expand(
                self.server.store,
                destination,
                lambda url: new_message(
                    url,
                    PublishHeaders(header_pairs(headers)),
                    body.encode("utf-8"),
                    clock=self.clock(),
                    caller_ip=request.remote_addr or "",
                    queue=queue,
                ),
            )
        except APIError as exc:
            raise APIError(exc.status, f"batch item {index}: {exc.message}") from None

    def _answer_invoker(self, run: workflows.Run) -> None:
        """Publish the result of a run started by ``context.invoke`` to its invoker."""
        message = self.workflows.invoker_answer(run, self.clock())
        if message is None:
            return
        try:
            self._accept([(message, None)])
        except APIError as exc:  # the invoker ended or was cancelled meanwhile
            self.server.log.info("invoke result of %s not delivered: %s", run.id, exc.message)

    # -- messages -----------------------------------------------------------------------

    def get_message(self, request: Request, id: str) -> Response:
        """``GET /v2/messages/{id}``: a message not yet delivered."""
        message = self.server.store.load(id)
        if message is None:
            raise APIError(404, f"message {id} not found")
        return json_response(views.message(message))

    def cancel_message(self, request: Request, id: str) -> Response:
        """``DELETE /v2/messages/{id}``."""
        message = self.server.store.load(id)
        if not self.server.store.cancel([id]):
            raise APIError(404, f"message {id} not found")
        self.server.dispatcher.cancel([id])
        self.server.dispatcher.events.cancelled([message] if message else [])
        return json_response({"cancelled": 1}, 202)

    def cancel_messages(self, request: Request) -> Response:
        """``DELETE /v2/messages``: the messages named by ids or filters (``filters.py``)."""
        selection = filters.parse(request, filters.MESSAGES)
        if selection.ids is not None:
            ids = list(selection.ids)
        else:
            pending = self.server.store.pending()
            ids, _ = filters.take((m.id for m in pending if selection.matches(m)), selection.count)
        doomed = {m.id: m for m in map(self.server.store.load, ids) if m is not None}
        cancelled = self.server.store.cancel(ids)
        self.server.dispatcher.cancel(cancelled)
        self.server.dispatcher.events.cancelled([doomed[i] for i in cancelled if i in doomed])
        return json_response({"cancelled": len(cancelled)})

    # -- events (logs) ------------------------------------------------------------------

    def list_events(self, request: Request) -> Response:
        """``GET /v2/events`` (or ``/v2/logs``): ``events.py``."""
        return events.list_view(self.server, request)
