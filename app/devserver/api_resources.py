"""The API's management views: schedules, queues, the dead-letter queue and keys.

``API`` (``api.py``) inherits them and routes to them; publishing and messages live there.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from app.devserver import filters, views
from app.devserver.json_input import parse_json
from app.devserver.publish import (
    APIError,
    Clock,
    PublishHeaders,
    bad_request,
    duration_header,
    new_message,
)
from app.devserver.records import DeadLetter, Message, Schedule, new_id
from app.devserver.scheduler import next_fire
from app.qstash.errors import InvalidCron

if TYPE_CHECKING:
    from app.devserver.server import DevServer

#: Queue names and schedule ids: URL-safe, 1-128 characters.
QUEUE_NAME = re.compile(r"[A-Za-z0-9._~-]{1,128}")
#: Entries one ``GET /v2/dlq`` page lists unless ``count`` says otherwise (QStash's default).
LIST_COUNT = 100
#: The dev server's own bound on a queue's parallelism (far above any plan's).
MAX_PARALLELISM = 10_000


def json_response(data: Any, status: int = 200) -> Response:
    """Return ``data`` as a JSON response."""
    return Response(json.dumps(data), status=status, mimetype="application/json")


class ResourceViews:
    """Schedules, queues, DLQ and keys views over ``self.server``."""

    server: DevServer

    def clock(self) -> Clock:
        """Return the current time and the server's time scale."""
        return Clock(time.time(), self.server.time_scale)

    # -- schedules ----------------------------------------------------------------------

    def create_schedule(self, request: Request, destination: str) -> Response:
        """``POST /v2/schedules/{destination}``: create, or upsert by Upstash-Schedule-Id."""
        server, headers = self.server, PublishHeaders(request.headers.items())
        cron = headers.get("Upstash-Cron")
        if not cron:
            raise bad_request("the Upstash-Cron header is required")
        try:
            next_at = next_fire(cron, time.time(), server.time_scale)
        except InvalidCron as exc:
            raise bad_request(f"invalid cron: {exc}") from None
        item, _ = new_message(
            destination,
            headers,
            request.get_data(),
            clock=self.clock(),
            caller_ip=request.remote_addr or "",
        )
        spec = dict(item.spec, cron=cron.strip(), queueName=headers.get("Upstash-Queue-Name"))
        spec["delay"] = duration_header(headers, "Upstash-Delay") or 0
        schedule_id = (headers.get("Upstash-Schedule-Id") or "").strip() or new_id("scd")
        if not QUEUE_NAME.fullmatch(schedule_id):
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
        data = json_body(request)
        if not isinstance(data, dict):
            raise bad_request("the body must be a JSON object with queueName and parallelism")
        name, parallelism = data.get("queueName"), data.get("parallelism", 1)
        if not isinstance(name, str) or not QUEUE_NAME.fullmatch(name):
            raise bad_request(f"invalid queueName {name!r}")
        if not isinstance(parallelism, int) or isinstance(parallelism, bool):
            parallelism = None
        if parallelism is None or not 1 <= parallelism <= MAX_PARALLELISM:
            raise bad_request(
                f"parallelism must be an integer 1-{MAX_PARALLELISM},"
                f" not {data.get('parallelism')!r}"
            )
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
        """``GET /v2/dlq``: the entries ids or filters name (``filters.py``), 100 a page."""
        selection = filters.parse(request, filters.DLQ)
        entries, cursor = self._dead_letters(selection, default_count=LIST_COUNT)
        answer: dict[str, Any] = {"messages": [views.dead_letter(e) for e in entries]}
        return json_response(_with_cursor(answer, cursor))

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
        """``DELETE /v2/dlq``: the entries ids or filters name, ``count`` at a time."""
        entries, cursor = self._dead_letters(filters.parse(request, filters.DLQ))
        deleted = self.server.store.delete_dead_letters([entry.dlq_id for entry in entries])
        return json_response(_with_cursor({"deleted": deleted}, cursor))

    def retry_dlq(self, request: Request, id: str) -> Response:
        """``POST /v2/dlq/retry/{dlqId}``: publish the message again, as a new message."""
        entry = self.server.store.dead_letter_by_id(id)
        answer = self._retry(entry) if entry is not None else None
        if answer is None:
            raise APIError(404, f"dlq message {id} not found")
        return json_response(answer, 202)

    def retry_dlq_many(self, request: Request) -> Response:
        """``POST /v2/dlq/retry``: retry the entries ids or filters name, ``count`` at a time."""
        entries, cursor = self._dead_letters(filters.parse(request, filters.DLQ))
        responses = [answer for entry in entries if (answer := self._retry(entry)) is not None]
        return json_response(_with_cursor({"responses": responses}, cursor), 202)

    def _dead_letters(
        self, selection: filters.Selection, default_count: int | None = None
    ) -> tuple[list[DeadLetter], str | None]:
        """Return the entries ``selection`` names and the cursor to the next ones, if any."""
        store = self.server.store
        if selection.ids is not None:
            found = (store.dead_letter_by_id(i) for i in dict.fromkeys(selection.ids))
            return [entry for entry in found if entry is not None], None
        matching = (
            entry
            for entry in store.dead_letters(after=selection.cursor)
            if selection.matches(entry.message, entry.response_status)
        )
        entries, more = filters.take(matching, selection.count or default_count)
        return entries, str(entries[-1].seq) if more else None

    def _retry(self, entry: DeadLetter) -> dict[str, str] | None:
        """Publish ``entry``'s message again as a new one; None if it left the DLQ meanwhile."""
        store, clock = self.server.store, self.clock()
        spec = {**entry.message.spec, "createdAt": int(clock.now * 1000), "notBefore": 0}
        spec.pop("retried", None)
        message = Message(new_id("msg"), spec, entry.message.body, 0, clock.now)
        if not store.retry_dead_letter(entry.dlq_id, message, clock.now):
            return None
        self.server.dispatcher.events.created([message])
        self.server.dispatcher.push([message])
        return {"messageId": message.id}

    # -- keys ---------------------------------------------------------------------------

    def keys(self, request: Request) -> Response:
        """``GET /v2/keys``: the signing keys deliveries are signed with."""
        return json_response({"current": self.server.current_key, "next": self.server.next_key})


def _with_cursor(answer: dict[str, Any], cursor: str | None) -> dict[str, Any]:
    """Return ``answer`` with ``cursor`` when there is more to page through (QStash omits it)."""
    return {**answer, "cursor": cursor} if cursor else answer


def json_body(request: Request) -> Any:
    """Return the request's JSON body (None if empty); 400 if it is not strict JSON."""
    raw = request.get_data()
    return parse_json(raw) if raw.strip() else None
