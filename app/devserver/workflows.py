"""Upstash Workflow runs: what QStash does for the ``upstash-workflow`` SDKs.

A workflow SDK publishes (``/v2/batch``, ``/v2/publish``) with ``Upstash-Workflow-RunId``,
``-Url`` and ``-Init``; those messages belong to a run. QStash, not the SDK, builds the body
each step delivery carries: a JSON array whose first entry is the run's initial payload and
whose next entries are the run's messages so far, each ``{"messageId", "body": base64,
"callType"}`` (``"step"`` for a step result, ``"toCallback"`` for a ``context.call``). The
SDK posts one step per call and reads the run's history back from that array.

* ``Upstash-Workflow-Init: true`` starts a run with the message's body as initial payload;
  later messages of the run are appended in publish order (a step's Upstash-Delay or
  Not-Before is an ordinary delayed delivery: ``context.sleep``).
* ``context.call``: the message to the third party (``Upstash-Workflow-CallType:
  toCallback``) is delivered as published; its ``Upstash-Callback`` message carries the
  run's headers from ``Upstash-Callback-Workflow-*`` (``callbacks.py``), and the SDK then
  publishes the call's result as a step.
* ``DELETE /v2/workflows/runs/{id}?cancel=false`` ends a run (the SDK's clean-up after
  its last step); ``cancel=true`` also cancels the run's pending messages, as does
  ``DELETE /v2/workflows/runs`` with a JSON body (ids, URL prefix, or all).
* A step that goes to the DLQ makes the run RUN_FAILED; its failure callback carries
  ``workflowRunId`` (``callbacks.py``) for the SDK's ``failure_function``.
* ``GET /v2/workflows/logs`` lists the runs in progress and the last ``KEEP_ENDED`` ended.

* ``context.waitForEvent`` / notify: ``waiters.py``; a resumed wait is a step of its run.
* ``context.invoke``: the invoked run's first message (init, with a forwarded
  ``Upstash-Workflow-Invoke-Count``) carries the invoke request ``{"body", "headers",
  "workflowUrl", "step", ...}``; the run starts with its ``body``, and when it ends
  (its result: the body of the SDK's closing ``DELETE``), is cancelled or fails (a step in
  the DLQ), the invoker gets its Invoke step with ``out`` ``{"body", "isFailed",
  "isCanceled"}``, published to its URL with its headers.
* Parallel steps (``Promise.all``) need nothing more: the SDK publishes one plan step per
  branch in a batch, then each branch's result; each delivery's body is the history up to
  and including its own message, which tells the SDK which branch to run.

Runs live in memory; after a restart the runs in progress are rebuilt from the pending
messages, whose bodies hold each run's history, and from the stored waiters (ended runs
are gone from the logs). The other workflow endpoints (its DLQ, events, webhooks) answer
501.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from app.devserver.api_resources import json_body, json_response
from app.devserver.publish import APIError, Clock, PublishHeaders, new_message
from app.devserver.records import Message

if TYPE_CHECKING:
    from app.devserver.delivery import AttemptEvent
    from app.devserver.server import DevServer

RUN_ID = "Upstash-Workflow-RunId"
URL = "Upstash-Workflow-Url"
CREATED_AT = "Upstash-Workflow-CreatedAt"
#: Ended runs the logs keep (the oldest are forgotten first).
KEEP_ENDED = 1000
DEFAULT_COUNT = 100
#: The query parameters ``GET /v2/workflows/logs`` honours; any other answers 501.
LOG_FILTERS = frozenset({"workflowRunId", "workflowUrl", "state", "count", "cursor", "groupBy"})
#: The header (forwarded to the endpoint) by which a run started by ``context.invoke`` shows.
INVOKE_COUNT = "upstash-workflow-invoke-count"
#: The query parameters ``DELETE /v2/workflows/runs`` honours; any other answers 501.
CANCEL_FILTERS = frozenset({"workflowRunIds", "workflowUrl", "workflowUrlExactMatch", "count"})
#: Routes of the workflow API the dev server does not implement.
NOT_IMPLEMENTED = (r"/v2/workflows/.+",)


def delivery_headers(workflow: dict[str, Any], created: int) -> dict[str, str]:
    """Return the headers QStash adds to a delivery of a run's step (``created``: when the
    run started, unix ms: the JS SDK's ``context.workflowRunCreatedAt``)."""
    return {RUN_ID: workflow["runId"], URL: workflow["url"], CREATED_AT: str(created)}


def _entry(message_id: str, body: bytes, call_type: str) -> dict[str, str]:
    encoded = base64.b64encode(body).decode("ascii")
    return {"messageId": message_id, "body": encoded, "callType": call_type}


@dataclass
class Run:
    """One workflow run: the entries every step delivery carries, oldest first."""

    id: str
    url: str
    entries: list[dict[str, str]] = field(default_factory=list)
    #: When each entry was published (ms), for the logs.
    times: list[int] = field(default_factory=list)
    created: int = field(default_factory=lambda: _ms(time.time()))
    completed: int | None = None
    state: str = "RUN_STARTED"
    #: What the SDK's closing ``DELETE`` sent: the route function's result, as JSON text.
    response: str | None = None
    #: The run that started this one with ``context.invoke`` and waits for its result
    #: (``url``, ``headers``, ``step``), until it got it.
    invoker: dict[str, Any] | None = None

    def log(self) -> dict[str, Any]:
        """Return the run as ``GET /v2/workflows/logs`` lists it."""
        steps = []
        for index, (entry, at) in enumerate(zip(self.entries, self.times, strict=False)):
            if entry["callType"] != "step":
                continue  # a context.call's request: its result is the "Call" step after it
            body = base64.b64decode(entry["body"]).decode("utf-8", "replace")
            if index == 0:
                step: dict[str, Any] = {"stepName": "init", "stepType": "Initial", "out": body}
            else:
                try:
                    step = json.loads(body)
                except ValueError:
                    step = {"out": body}
                step = {k: v for k, v in step.items() if v is not None and k != "method"}
            step.update(
                callType="step", messageId=entry["messageId"], state="STEP_SUCCESS", createdAt=at
            )
            step.setdefault("concurrent", 1)
            steps.append({"steps": [step], "type": "sequential"})
        run: dict[str, Any] = {
            "workflowRunId": self.id,
            "workflowUrl": self.url,
            "workflowState": self.state,
            "workflowRunCreatedAt": self.created,
            "steps": steps,
        }
        if self.completed is not None:
            run["workflowRunCompletedAt"] = self.completed
        if self.response is not None:
            run["workflowRunResponse"] = self.response
        return run


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class Runs:
    """The runs in progress, keyed by run id."""

    def __init__(self, keep: int = KEEP_ENDED) -> None:
        self._runs: dict[str, Run] = {}
        self._ended: deque[Run] = deque(maxlen=keep)
        self._lock = threading.Lock()
        #: Called with each run that ended (cancelled or not).
        self.on_end: list[Callable[[Run], None]] = []
        #: Called with a run whose step went to the DLQ (it is RUN_FAILED).
        self.on_failed: list[Callable[[Run], None]] = []

    def get(self, run_id: str) -> Run | None:
        """Return the run ``run_id`` if it is in progress."""
        with self._lock:
            return self._runs.get(run_id)

    def restore(self, pending: list[Message]) -> None:
        """Rebuild the runs from pending messages: the longest history of each run wins."""
        with self._lock:
            for message in pending:
                workflow = message.spec.get("workflow")
                if not workflow or workflow["callType"] != "step":
                    continue
                try:
                    entries = json.loads(message.body)
                except ValueError:
                    continue
                self._adopt(
                    workflow["runId"],
                    workflow["url"],
                    entries,
                    message.spec["createdAt"],
                    workflow.get("invoker"),
                )

    def adopt(
        self,
        run_id: str,
        url: str,
        entries: list[dict[str, str]],
        at: int,
        invoker: dict[str, Any] | None = None,
    ) -> None:
        """Rebuild run ``run_id`` from a stored history unless a longer one is known; ``at``
        (unix ms) is when it started, or when the message holding the history was published
        (after a restart, a run rebuilt from a pending step shows that as its start)."""
        with self._lock:
            self._adopt(run_id, url, entries, at, invoker)

    def _adopt(
        self,
        run_id: str,
        url: str,
        entries: list[dict[str, str]],
        at: int,
        invoker: dict[str, Any] | None,
    ) -> None:
        run = self._runs.get(run_id)
        if run is None or len(run.entries) < len(entries):
            run = Run(run_id, url, list(entries), [at] * len(entries), at)
            self._runs[run_id] = run
        run.invoker = run.invoker or invoker

    def prepare(self, messages: list[Message]) -> list[Message]:
        """Return ``messages`` as delivered: a step gets its run's history as its body.

        Messages that are no workflow messages are returned unchanged. All or nothing: a
        step of a run not in progress (never started, ended or cancelled) is refused with
        400, and so is a second start of a run in progress (QStash's answer since its
        singleton runs: the SDK's trigger throws, the running run goes on), before any run
        changes. A run id whose run ended may start again.
        """
        invocations: dict[str, dict[str, Any]] = {}
        with self._lock:
            starting: set[str] = set()
            for message in messages:
                workflow = message.spec.get("workflow")
                if not workflow:
                    continue
                run_id = workflow["runId"]
                known = run_id in self._runs or run_id in starting
                if workflow["init"] and _invoked(message):
                    invocations[message.id] = _invocation(message)
                if workflow["init"] and known:
                    raise APIError(400, f"workflow run {run_id} is already in progress")
                if not workflow["init"] and not known:
                    raise APIError(400, f"workflow run {run_id} is not in progress")
                if workflow["init"]:
                    starting.add(run_id)
            return [self._add(message, invocations.get(message.id)) for message in messages]

    def _add(self, message: Message, invocation: dict[str, Any] | None = None) -> Message:
        workflow = message.spec.get("workflow")
        if not workflow:
            return message
        run_id, call_type = workflow["runId"], workflow["callType"]
        if workflow["init"]:
            self._runs[run_id] = Run(run_id, workflow["url"])
        run = self._runs[run_id]
        if invocation is not None:  # the invoked run starts with the invoke's own body
            body = invocation["body"]
            message = replace(message, body=body.encode() if isinstance(body, str) else b"")
            run.invoker = {k: invocation[k] for k in ("url", "headers", "step")}
        if run.invoker is not None:  # kept with the run's messages, for a restart
            workflow = {**workflow, "invoker": run.invoker}
            message = replace(message, spec={**message.spec, "workflow": workflow})
        if call_type in ("step", "toCallback"):
            run.state = "RUN_STARTED"
            run.entries.append(_entry(message.id, message.body, call_type))
            run.times.append(message.spec["createdAt"])
        if call_type != "step":
            return message  # a context.call to a third party: its own body, no run headers
        body = json.dumps(run.entries, separators=(",", ":")).encode()
        headers = {**message.spec["headers"], **delivery_headers(workflow, run.created)}
        return replace(message, spec={**message.spec, "headers": headers}, body=body)

    def on_attempt(self, event: AttemptEvent) -> None:
        """A run whose step went to the DLQ is RUN_FAILED (until a retried step goes on)."""
        workflow = event.message.spec.get("workflow")
        if event.outcome != "dlq" or not workflow or workflow["callType"] != "step":
            return
        with self._lock:
            run = self._runs.get(workflow["runId"])
            if run is not None:
                run.state = "RUN_FAILED"
        if run is not None:
            for listener in self.on_failed:
                listener(run)

    def end(self, run_id: str, state: str, response: str | None = None) -> bool:
        """End run ``run_id`` in ``state``; return whether it was in progress."""
        with self._lock:
            run = self._runs.pop(run_id, None)
            if run is None:
                return False
            run.state, run.completed, run.response = state, _ms(time.time()), response
            self._ended.append(run)
        for listener in self.on_end:
            listener(run)
        return True

    def invoker_answer(self, run: Run, clock: Clock) -> Message | None:
        """Return the step that gives the run which invoked ``run`` its result, once.

        ``context.invoke``'s step, its ``out`` the JSON text ``{"body": <the invoked run's
        result, JSON text>, "isFailed", "isCanceled"}``, published to the invoker's URL
        with its headers; None if nobody invoked ``run``, it already answered, or it is
        still running.
        """
        if run.state == "RUN_STARTED":
            return None
        with self._lock:
            invoker, run.invoker = run.invoker, None
        if invoker is None:
            return None
        out = {
            "body": run.response,
            "isFailed": run.state == "RUN_FAILED",
            "isCanceled": run.state == "RUN_CANCELED",
        }
        step = {**invoker["step"], "out": json.dumps(out, separators=(",", ":"))}
        message, _ = new_message(
            invoker["url"],
            PublishHeaders([(name, value) for name, value in invoker["headers"]]),
            json.dumps(step, separators=(",", ":")).encode(),
            clock=clock,
            caller_ip="",
        )
        return message

    def in_progress(self) -> list[Run]:
        """Return the runs in progress."""
        with self._lock:
            return list(self._runs.values())

    def logs(self) -> list[dict[str, Any]]:
        """Return every run known, newest first, as the logs list them."""
        with self._lock:
            runs = [*self._ended, *self._runs.values()]
            runs.sort(key=lambda run: run.created, reverse=True)
            return [run.log() for run in runs]


def _invoked(message: Message) -> bool:
    """Whether a run's first message is ``context.invoke``'s (it forwards an invoke count)."""
    return any(name.lower() == INVOKE_COUNT for name in message.spec["headers"])


def _invocation(message: Message) -> dict[str, Any]:
    """Return ``context.invoke``'s request (the invoked run's first message's body): the
    invoked run's ``body``, and the invoker's ``url``, ``headers`` and Invoke ``step``."""
    try:
        request = json.loads(message.body)
    except ValueError:
        request = None
    if not (
        isinstance(request, dict)
        and isinstance(request.get("body"), str | None)
        and isinstance(request.get("workflowUrl"), str)
        and isinstance(request.get("step"), dict)
        and isinstance(request.get("headers"), dict)
        and all(
            isinstance(values, list) and values and isinstance(values[0], str)
            for values in request["headers"].values()
        )
    ):
        raise APIError(
            400,
            "a run started by context.invoke needs the invoke request as its body:"
            ' {"body", "headers", "workflowUrl", "step", ...}',
        )
    headers = [(name, values[0]) for name, values in request["headers"].items()]
    return {
        "body": request.get("body"),
        "url": request["workflowUrl"],
        "headers": headers,
        "step": request["step"],
    }


def run_steps(runs: Runs, request: Request, run_id: str) -> Response:
    """``GET /v2/workflows/runs/{id}``: the run's history, as a step delivery's body holds
    it (the SDK's "lazy fetch" of a delivery that came without one); 404 once it ended."""
    run = runs.get(run_id)
    if run is None:
        raise APIError(404, f"workflow run {run_id} not found")
    return json_response(list(run.entries))


def delete_run(server: DevServer, runs: Runs, request: Request, run_id: str) -> Response:
    """``DELETE /v2/workflows/runs/{id}[?cancel=true]``: end a run, or cancel it."""
    cancel = request.args.get("cancel", "false").strip().lower() == "true"
    response = (
        None if cancel or not request.get_data() else request.get_data().decode("utf-8", "replace")
    )
    if not runs.end(run_id, "RUN_CANCELED" if cancel else "RUN_SUCCESS", response):
        raise APIError(404, f"workflow run {run_id} not found")
    if cancel:
        _cancel_pending(server, {run_id})
    return json_response({})


def cancel_runs(server: DevServer, runs: Runs, request: Request) -> Response:
    """``DELETE /v2/workflows/runs``: ``@upstash/workflow``'s ``client.cancel``.

    Since 1.3 the SDK filters in the query: ``workflowRunIds`` (repeated) cancels those runs,
    ``workflowUrl`` the runs whose URL starts with it (equals it with
    ``workflowUrlExactMatch=true``), neither every run; ``count`` caps how many. Older SDKs
    send a JSON body instead: ``{"workflowRunIds": [...]}``, ``{"workflowUrl": prefix}``
    or ``{}``. Answers ``{"cancelled": n}``.
    """
    if request.args:
        ids, prefix, exact, count = _cancel_query(request)
    else:
        ids, prefix, exact, count = _cancel_body(request)
    chosen = [
        run.id
        for run in runs.in_progress()
        if (ids is None or run.id in ids)
        and (prefix is None or (run.url == prefix if exact else run.url.startswith(prefix)))
    ][:count]
    ended = {run_id for run_id in chosen if runs.end(run_id, "RUN_CANCELED")}
    _cancel_pending(server, ended)
    return json_response({"cancelled": len(ended)})


CancelFilter = tuple[list[str] | None, str | None, bool, int | None]


def _cancel_query(request: Request) -> CancelFilter:
    unknown = sorted(set(request.args) - CANCEL_FILTERS)
    if unknown:
        raise APIError(
            501,
            "DELETE /v2/workflows/runs: the dev server does not filter by"
            f" {', '.join(unknown)} (only workflowRunIds, workflowUrl, workflowUrlExactMatch"
            " and count)",
        )
    ids = request.args.getlist("workflowRunIds") or None
    prefix = request.args.get("workflowUrl")
    exact = request.args.get("workflowUrlExactMatch", "false").strip().lower() == "true"
    raw = request.args.get("count")
    return ids, prefix, exact, None if raw is None else _natural(raw, "count")


def _cancel_body(request: Request) -> CancelFilter:
    body = json_body(request)
    ids = body.get("workflowRunIds") if isinstance(body, dict) else None
    prefix = body.get("workflowUrl") if isinstance(body, dict) else None
    if (
        not isinstance(body, dict)
        or set(body) - {"workflowRunIds", "workflowUrl"}
        or (
            ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids))
        )
        or (prefix is not None and not isinstance(prefix, str))
    ):
        raise APIError(
            400,
            'the body must be {"workflowRunIds": [...]}, {"workflowUrl": "<prefix>"} or {}',
        )
    return ids, prefix, False, None


def _cancel_pending(server: DevServer, run_ids: set[str]) -> None:
    if not run_ids:
        return
    pending = server.store.pending()
    doomed = [m for m in pending if (m.spec.get("workflow") or {}).get("runId") in run_ids]
    cancelled = server.store.cancel([m.id for m in doomed])
    server.dispatcher.cancel(cancelled)
    server.dispatcher.events.cancelled([m for m in doomed if m.id in cancelled])


def list_logs(runs: Runs, request: Request) -> Response:
    """``GET /v2/workflows/logs`` (and ``/v2/workflows/events?groupBy=workflowRunId``, the
    JS client's ``logs``): the runs, newest first, filtered and paged."""
    unknown = sorted(set(request.args) - LOG_FILTERS)
    if request.args.get("groupBy", "workflowRunId") != "workflowRunId":
        unknown.append("groupBy=" + request.args["groupBy"])
    if unknown:
        raise APIError(
            501, f"{request.path}: the dev server does not filter by {', '.join(unknown)}"
        )
    wanted = {
        name: request.args[name]
        for name in ("workflowRunId", "workflowUrl")
        if name in request.args
    }
    state = request.args.get("state")
    listed = [
        run
        for run in runs.logs()
        if all(run[name] == value for name, value in wanted.items())
        and (state is None or run["workflowState"] == state)
    ]
    start = _natural(request.args.get("cursor", "0"), "cursor")
    count = _natural(request.args.get("count", str(DEFAULT_COUNT)), "count")
    page = listed[start : start + count]
    answer: dict[str, Any] = {"runs": page}
    if start + count < len(listed):
        answer["cursor"] = str(start + count)
    return json_response(answer)


def _natural(raw: str, name: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise APIError(400, f"invalid {name} {raw!r}: expected a non-negative integer")
    return int(raw)


def dlq_list(plain: Callable[[Request], Response], request: Request) -> Response:
    """``GET /v2/dlq``: ``plain`` unless ``source=workflow`` asks for the workflow DLQ
    (``@upstash/workflow``'s ``client.dlq.list``), which the dev server does not keep."""
    if "source" in request.args:
        raise APIError(
            501,
            "GET /v2/dlq?source=...: the dev server does not keep a workflow DLQ (list the"
            " DLQ without source: a workflow's failed steps are in it as messages)",
        )
    return plain(request)


def not_implemented(request: Request, **_: str) -> Response:
    """Answer 501 for the workflow endpoints the dev server lacks."""
    raise APIError(
        501,
        f"{request.method} {request.path}: the dev server does not implement this workflow"
        " endpoint (the workflow DLQ, webhooks)",
    )
