"""Callback and failure-callback messages, with the body QStash documents (§4).

After each attempt a message with ``Upstash-Callback`` gets a new signed message posted to
that URL describing the attempt; once its retries are exhausted (or on a 489) one with
``Upstash-Failure-Callback`` gets the same description plus ``dlqId``. Both are ordinary
messages of the dev server (retried, signed, dead-lettered), tuned by the publisher's
``Upstash-Callback-*`` / ``Upstash-Failure-Callback-*`` headers.

A callback's body quotes its source's body and headers (``sourceBody``, ``sourceHeader``),
so the callback message of a source published with ``Upstash-Redact-Fields`` shows its
whole body redacted in the API; the callback URL still receives it in full.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import Headers

from app.devserver.publish import DEFAULT_RETRIES, Clock
from app.devserver.records import Message, new_id
from app.qstash import retry_delay
from app.qstash.callbacks import Callback
from app.qstash.timing import DurationError, parse_duration


@dataclass(frozen=True, slots=True)
class Response:
    """What the endpoint answered to one attempt (status None: no HTTP answer)."""

    status: int | None
    headers: dict[str, list[str]]
    body: bytes
    error: str | None = None


def source_headers(message: Message) -> dict[str, list[str]]:
    """Return the headers the destination received (name → values), as in callbacks."""
    headers = {name: [value] for name, value in message.spec["headers"].items()}
    headers["Upstash-Message-Id"] = [message.id]
    headers["Upstash-Retried"] = [str(message.retried)]
    if message.spec.get("scheduleId"):
        headers["Upstash-Schedule-Id"] = [message.spec["scheduleId"]]
    return headers


def callback_body(message: Message, response: Response, *, dlq_id: str | None = None) -> bytes:
    """Return the JSON body QStash posts to a (failure) callback about one attempt."""
    spec = message.spec
    callback = Callback(
        status=response.status or 0,
        header=response.headers,
        body=response.body,
        retried=message.retried,
        max_retries=spec["retries"],
        source_message_id=message.id,
        topic_name=spec.get("topicName") or "",
        endpoint_name=spec.get("endpointName") or "",
        url=spec["url"],
        method=spec["method"],
        source_header=source_headers(message),
        source_body=message.body,
        not_before=spec["notBefore"],
        created_at=spec["createdAt"],
        schedule_id=spec.get("scheduleId") or "",
        caller_ip=spec.get("callerIP") or "",
        error=response.error,
        dlq_id=dlq_id,
    )
    wire = callback.to_wire()
    if dlq_id is not None:
        wire.update(_workflow_failure(message))
    return json.dumps(wire, separators=(",", ":")).encode()


def _workflow_failure(message: Message) -> dict[str, Any]:
    """Return what QStash adds to a failure callback's body about a run's failed step.

    ``workflowRunId`` (the SDKs' failure handler reads it) and, as ``sourceBody``, the run's
    initial payload (base64) rather than the step delivery's history array, so the
    failure function sees the payload the run was started with.
    """
    workflow = message.spec.get("workflow")
    if not workflow:
        return {}
    fields: dict[str, Any] = {"workflowRunId": workflow["runId"]}
    if workflow["callType"] == "step":
        try:
            fields["sourceBody"] = json.loads(message.body)[0]["body"]
        except (ValueError, LookupError, TypeError):
            pass
    return fields


def _option(options: Headers, prefix: str, name: str) -> str | None:
    value = options.get(f"{prefix}{name}")
    return value.strip() if value else None


def callback_message(
    message: Message, url: str, body: bytes, *, failure: bool, clock: Clock
) -> Message:
    """Return the message that posts ``body`` to the callback ``url``."""
    key = "failureCallbackHeaders" if failure else "callbackHeaders"
    prefix = "Upstash-Failure-Callback-" if failure else "Upstash-Callback-"
    options = Headers(list(message.spec.get(key, {}).items()))
    forward = prefix + "Forward-"
    headers = {
        name[len(forward) :]: value
        for name, value in options.items()
        if name.lower().startswith(forward.lower())
    }
    headers["Content-Type"] = "application/json"
    retries = _option(options, prefix, "Retries")
    expression = _option(options, prefix, "Retry-Delay")
    if expression is not None:
        try:
            retry_delay.parse(expression)
        except retry_delay.RetryDelayError:
            expression = None
    spec: dict[str, Any] = {
        **message.spec,
        "url": url,
        "method": (_option(options, prefix, "Method") or "POST").upper(),
        "headers": headers,
        "retries": int(retries) if retries and retries.isdigit() else DEFAULT_RETRIES,
        "retryDelay": expression,
        "timeout": _seconds(_option(options, prefix, "Timeout")),
        "callback": None,
        "failureCallback": None,
        "callbackHeaders": {},
        "failureCallbackHeaders": {},
        "flowControl": None,
        "queueName": None,
        "createdAt": int(clock.now * 1000),
        "isCallback": True,
    }
    if message.spec.get("redact"):
        spec["redact"] = {**message.spec["redact"], "body": True}
    spec["workflow"] = _workflow(options, prefix, url, failure=failure)
    if spec["workflow"] is not None:
        headers["Upstash-Workflow-RunId"] = spec["workflow"]["runId"]
        headers["Upstash-Workflow-Url"] = spec["workflow"]["url"]
    due = clock.after(_seconds(_option(options, prefix, "Delay")) or 0)
    spec["notBefore"] = int(due * 1000)
    return Message(new_id("msg"), spec, body, 0, due)


def _workflow(options: Headers, prefix: str, url: str, *, failure: bool) -> dict[str, Any] | None:
    """Return the run a callback belongs to (``Upstash-Callback-Workflow-RunId``), if any.

    The workflow SDKs' ``context.call`` and failure callbacks name it so: the callback is
    delivered with ``Upstash-Workflow-RunId`` and ``-Url`` like the run's own steps.
    """
    run_id = _option(options, prefix, "Workflow-RunId")
    if not run_id:
        return None
    return {
        "runId": run_id,
        "url": _option(options, prefix, "Workflow-Url") or url,
        "init": False,
        "callType": "failureCall" if failure else "fromCallback",
    }


def _seconds(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return parse_duration(raw)
    except DurationError:
        return None
