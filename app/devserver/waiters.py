"""Upstash Workflow's wait-for-event and notify: what QStash does for ``context.waitForEvent``.

| call                            | what the dev server does                                |
|---------------------------------|---------------------------------------------------------|
| ``POST /v2/wait/{eventId}``     | the SDK's wait step: stores a waiter for the run (body  |
|                                 | ``{"url", "step", "timeout", "timeoutUrl",              |
|                                 | "timeoutHeaders"}``, headers: the run's); answers ``{}``|
| ``POST /v2/notify/{eventId}``   | resumes every waiter of the event with the body as its  |
|                                 | data; answers ``[{"waiter", "messageId",                |
|                                 | "workflowRunId", "workflowCreatedAt"}]`` (``[]``: none) |
| ``POST /v2/notify/{runId}/      | the same for that run's waiter (one object); with none  |
| {eventId}``                     | yet, the event is kept and the run's next wait for it   |
|                                 | resumes at once ("lookback"): ``{"workflowRunId"}``     |
| ``GET /v2/waiters/{eventId}``   | the event's waiters: ``url``, ``headers`` (QStash's     |
|                                 | names: ``Upstash-Workflow-Runid``), ``deadline`` (unix  |
|                                 | seconds), ``timeoutUrl``, ``timeoutHeaders``            |

A resumed waiter is a step of its run: a ``Wait`` step (the wait's ``step`` plus
``waitEventId``, ``timeout``, ``waitTimeout`` and, when notified, ``out``: the event data in
base64) published to the waiter's URL with the run's headers, its body built from the run's
history at that moment (``workflows.Runs``), as the SDK parses it. A waiter not notified
before its deadline (``timeout``, time-scaled) resumes the same way with ``waitTimeout:
true`` and no ``out``, at ``timeoutUrl`` with ``timeoutHeaders``. A waiter resumes once:
notify and timeout both take it from the store in one transaction, and a wait posted again
(its step's delivery retried) replaces the run's waiter for that step. A ``WaitForWebhook``
wait and a ``timeoutBody`` answer 501.

Waiters and kept events live in SQLite next to the messages, each waiter with its run's
history, so a restart loses neither a waiting run nor its deadline. A run that ends or is
cancelled drops its waiters and kept events; at most ``MAX_KEPT`` events are kept (the
oldest go first).
"""

from __future__ import annotations

import base64
import heapq
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from app.devserver.api_resources import json_body, json_response
from app.devserver.publish import (
    APIError,
    Clock,
    PublishHeaders,
    bad_request,
    check_destination,
    new_message,
)
from app.devserver.records import Message, new_id
from app.devserver.transport import canonical
from app.qstash.timing import DurationError, parse_duration

if TYPE_CHECKING:
    from app.devserver.server import DevServer
    from app.devserver.workflows import Runs

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS workflow_waiters (
    id TEXT PRIMARY KEY, event_id TEXT NOT NULL, run_id TEXT NOT NULL, waiter TEXT NOT NULL,
    due REAL NOT NULL);
CREATE INDEX IF NOT EXISTS workflow_waiters_event ON workflow_waiters(event_id);
CREATE TABLE IF NOT EXISTS workflow_events (
    run_id TEXT NOT NULL, event_id TEXT NOT NULL, data BLOB NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (run_id, event_id));
"""
#: Events kept for runs not waiting for them yet; the oldest are dropped past this.
MAX_KEPT = 10_000
#: The SDK's default wait (``context.waitForEvent`` without ``timeout``).
DEFAULT_TIMEOUT = "7d"
_WAIT_FIELDS = frozenset({"url", "step", "timeout", "timeoutUrl", "timeoutBody", "timeoutHeaders"})

#: Publishes messages as the API does (``API._accept``): one answer per message.
Accept = Callable[[list[tuple[Message, str | None]]], list[dict[str, Any]]]


def _listed(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in pairs:
        headers.setdefault(canonical(name), []).append(value)
    return headers


def _kept_headers(request: Request) -> list[tuple[str, str]]:
    """Return the wait request's headers the resumed step is published with."""
    return [
        (name, value)
        for name, value in request.headers.items()
        if name.lower().startswith("upstash-") or name.lower() == "content-type"
    ]


def _timeout_headers(raw: Any) -> list[tuple[str, str]]:
    if raw is None:
        return []
    if not isinstance(raw, dict) or not all(
        isinstance(values, list) and all(isinstance(v, str) for v in values)
        for values in raw.values()
    ):
        raise bad_request("'timeoutHeaders' must map header names to lists of strings")
    return [(name, values[0]) for name, values in raw.items() if values]


def _step(raw: Any) -> dict[str, Any]:
    if not (
        isinstance(raw, dict)
        and isinstance(raw.get("stepId"), int)
        and isinstance(raw.get("stepName"), str)
        and isinstance(raw.get("stepType"), str)
        and isinstance(raw.get("concurrent"), int)
    ):
        raise bad_request("'step' must be an object with stepId, stepName, stepType and concurrent")
    return {k: v for k, v in raw.items() if v is not None}


class Waiters:
    """The waiters of every run, their deadlines, and events kept for a run's next wait."""

    def __init__(self, server: DevServer, runs: Runs, accept: Accept) -> None:
        self.server = server
        self.runs = runs
        self.accept = accept
        self._heap: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        for statement in SCHEMA.split(";"):
            if statement.strip():
                server.store.query(statement)
        for waiter_id, run_id, raw, due in server.store.query(
            "SELECT id, run_id, waiter, due FROM workflow_waiters"
        ):
            waiter = json.loads(raw)
            runs.adopt(
                run_id,
                waiter["runUrl"],
                waiter["entries"],
                waiter["runCreated"],
                waiter.get("runInvoker"),
            )
            self._heap.append((due, waiter_id))
        heapq.heapify(self._heap)

    # -- the deadline thread ----------------------------------------------------------------

    def start(self) -> None:
        """Start resuming waiters whose deadline passes."""
        self._thread = threading.Thread(target=self._loop, name="qstash-waiters", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop resuming waiters (they stay stored)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        with self._cond:
            while not self._stopping:
                now = time.time()
                due = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[1])
                if due:
                    self._cond.release()
                    try:
                        for waiter_id in due:
                            self._time_out(waiter_id)
                    finally:
                        self._cond.acquire()
                    continue
                wait = self._heap[0][0] - now if self._heap else 1.0
                self._cond.wait(min(max(wait, 0.0), 1.0))

    def _time_out(self, waiter_id: str) -> None:
        try:
            taken = self._take("id = ?", (waiter_id,))
            for _, waiter in taken:
                self._resume(waiter, None)
        except Exception:
            log.exception("resuming waiter %s at its deadline failed", waiter_id)

    # -- views ----------------------------------------------------------------------------

    def wait(self, request: Request, event_id: str) -> Response:
        """``POST /v2/wait/{eventId}``: the run waits for the event (or takes a kept one)."""
        headers = _kept_headers(request)
        run_id = (PublishHeaders(headers).get("Upstash-Workflow-RunId") or "").strip()
        body = json_body(request)
        if not isinstance(body, dict):
            raise bad_request("the wait body must be a JSON object")
        unknown = sorted(set(body) - _WAIT_FIELDS)
        if unknown:
            raise bad_request(f"unknown wait field(s): {', '.join(unknown)}")
        if body.get("timeoutBody") is not None:
            raise APIError(501, "the dev server does not send a wait's timeoutBody")
        url = body.get("url")
        if not isinstance(url, str):
            raise bad_request("'url' must be the workflow's URL")
        timeout_url = body.get("timeoutUrl") or url
        if not isinstance(timeout_url, str):
            raise bad_request("'timeoutUrl' must be a URL")
        check_destination(url)
        check_destination(timeout_url)
        step = _step(body.get("step"))
        if step["stepType"] != "Wait":
            raise APIError(
                501,
                f"the dev server waits for notify only, not for a {step['stepType']} step"
                " (workflow webhooks are not implemented)",
            )
        timeout = body.get("timeout") or DEFAULT_TIMEOUT
        try:
            seconds = parse_duration(timeout if isinstance(timeout, str) else f"{timeout}s")
        except DurationError as exc:
            raise bad_request(f"invalid wait timeout: {exc}") from None
        timeout_headers = _timeout_headers(body.get("timeoutHeaders"))
        clock = self._clock()
        # Both resumptions must publish: refuse now what a publish would refuse later.
        new_message(url, PublishHeaders(headers), b"{}", clock=clock, caller_ip="")
        new_message(timeout_url, PublishHeaders(timeout_headers), b"{}", clock=clock, caller_ip="")
        run = self.runs.get(run_id)
        if run is None:
            named = run_id or "(no Upstash-Workflow-RunId)"
            raise APIError(400, f"workflow run {named} is not in progress")
        due = clock.after(seconds)
        waiter = {
            "eventId": event_id,
            "runId": run_id,
            "url": url,
            "headers": headers,
            "timeoutUrl": timeout_url,
            "timeoutHeaders": timeout_headers,
            "timeout": timeout if isinstance(timeout, str) else f"{timeout}s",
            "step": step,
            "deadline": int(due),
            "runUrl": run.url,
            "runCreated": run.created,
            "entries": list(run.entries),
            "runInvoker": run.invoker,
        }
        with self.server.store.transaction() as db:
            kept = db.execute(
                "DELETE FROM workflow_events WHERE run_id = ? AND event_id = ? RETURNING data",
                (run_id, event_id),
            ).fetchone()
            waiter_id = new_id("wtr")
            # A wait step delivered again (its first answer was lost) waits once.
            db.execute(
                "DELETE FROM workflow_waiters WHERE run_id = ? AND event_id = ?"
                " AND json_extract(waiter, '$.step.stepId') = ?",
                (run_id, event_id, step["stepId"]),
            )
            if kept is None:
                db.execute(
                    "INSERT INTO workflow_waiters VALUES (?, ?, ?, ?, ?)",
                    (waiter_id, event_id, run_id, json.dumps(waiter), due),
                )
        if kept is not None:
            self._resume(waiter, bytes(kept[0]))
        else:
            with self._cond:
                heapq.heappush(self._heap, (due, waiter_id))
                self._cond.notify()
        return json_response({})

    def notify(self, request: Request, event_id: str) -> Response:
        """``POST /v2/notify/{eventId}``: resume every waiter of the event."""
        data = request.get_data()
        taken = self._take("event_id = ?", (event_id,))
        return json_response([self._resume(waiter, data) for _, waiter in taken])

    def notify_run(self, request: Request, run_id: str, event_id: str) -> Response:
        """``POST /v2/notify/{runId}/{eventId}``: resume the run's waiter, or keep the event."""
        data = request.get_data()
        taken = self._take("event_id = ? AND run_id = ?", (event_id, run_id))
        if taken:
            answers = [self._resume(waiter, data) for _, waiter in taken]
            return json_response(answers[0] if len(answers) == 1 else answers)
        with self.server.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO workflow_events VALUES (?, ?, ?, ?)",
                (run_id, event_id, data, time.time()),
            )
            db.execute(
                "DELETE FROM workflow_events WHERE rowid NOT IN"
                " (SELECT rowid FROM workflow_events ORDER BY created DESC LIMIT ?)",
                (MAX_KEPT,),
            )
        return json_response({"workflowRunId": run_id})

    def list_waiters(self, request: Request, event_id: str) -> Response:
        """``GET /v2/waiters/{eventId}``: the event's waiters, oldest first."""
        rows = self.server.store.query(
            "SELECT waiter FROM workflow_waiters WHERE event_id = ? ORDER BY rowid", (event_id,)
        )
        return json_response([_view(json.loads(row[0])) for row in rows])

    def forget(self, run_ids: set[str]) -> None:
        """Drop the waiters and kept events of runs that ended or were cancelled."""
        if not run_ids:
            return
        marks = ",".join("?" * len(run_ids))
        with self.server.store.transaction() as db:
            db.execute(f"DELETE FROM workflow_waiters WHERE run_id IN ({marks})", tuple(run_ids))
            db.execute(f"DELETE FROM workflow_events WHERE run_id IN ({marks})", tuple(run_ids))

    # -- resuming -------------------------------------------------------------------------

    def _clock(self) -> Clock:
        return Clock(time.time(), self.server.time_scale)

    def _take(self, where: str, params: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
        """Remove the waiters matching ``where`` from the store and return them: whoever
        takes a waiter (a notify, its deadline) is the only one to resume it."""
        with self.server.store.transaction() as db:
            rows = db.execute(
                f"DELETE FROM workflow_waiters WHERE {where} RETURNING id, waiter", params
            ).fetchall()
        return [(row[0], json.loads(row[1])) for row in rows]

    def _resume(self, waiter: dict[str, Any], data: bytes | None) -> dict[str, Any]:
        """Publish the waiter's ``Wait`` step (notified with ``data``, or timed out)."""
        step = {
            **waiter["step"],
            "waitEventId": waiter["eventId"],
            "timeout": waiter["timeout"],
            "waitTimeout": data is None,
        }
        if data is None:
            url, headers = waiter["timeoutUrl"], waiter["timeoutHeaders"]
        else:
            url, headers = waiter["url"], waiter["headers"]
            step["out"] = base64.b64encode(data).decode("ascii")
        answer: dict[str, Any] = {"waiter": _view(waiter)}
        try:
            message, _ = new_message(
                url,
                PublishHeaders([(name, value) for name, value in headers]),
                json.dumps(step, separators=(",", ":")).encode(),
                clock=self._clock(),
                caller_ip="",
            )
            (published,) = self.accept([(message, None)])
            answer["messageId"] = published["messageId"]
        except APIError as exc:  # the run ended or was cancelled meanwhile
            answer["messageId"] = ""
            answer["error"] = exc.message
        answer.update(workflowRunId=waiter["runId"], workflowCreatedAt=waiter["runCreated"])
        return answer


def _view(waiter: dict[str, Any]) -> dict[str, Any]:
    """Return a waiter as ``GET /v2/waiters`` and notify answers list it."""
    return {
        "url": waiter["url"],
        "headers": _listed([(name, value) for name, value in waiter["headers"]]),
        "deadline": waiter["deadline"],
        "timeoutUrl": waiter["timeoutUrl"],
        "timeoutHeaders": _listed([(name, value) for name, value in waiter["timeoutHeaders"]]),
    }
