"""JSON views of stored objects, in the field names QStash's REST API answers with.

A message or schedule published with ``Upstash-Redact-Fields`` shows its redacted body
and headers as ``REDACTED:<sha256>`` (``redaction.py``) in every view here.
"""

from __future__ import annotations

import base64
from typing import Any

from app.devserver import redaction
from app.devserver.records import DeadLetter, Message, Queue, Schedule, labels


def _body(body: bytes) -> dict[str, str]:
    """QStash's body fields: ``body`` for UTF-8, ``bodyBase64`` otherwise, none when empty."""
    if not body:
        return {}
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"bodyBase64": base64.b64encode(body).decode("ascii")}


def _flow(spec: dict[str, Any]) -> dict[str, Any]:
    flow = spec.get("flowControl")
    if not flow:
        return {}
    view = {"flowControlKey": flow["key"], "period": flow.get("period") or 1}
    for name in ("parallelism", "rate"):
        if flow.get(name):
            view[name] = flow[name]
    return view


def _labels(spec: dict[str, Any]) -> dict[str, Any]:
    """QStash's two label fields: ``label`` the first (kept for old SDKs), ``labels`` all."""
    found = labels(spec)
    return {"label": found[0], "labels": found} if found else {}


def _shown(spec: dict[str, Any], body: bytes) -> dict[str, Any]:
    """The ``header`` and body fields of a message or schedule, redacted as it asked."""
    redact = spec.get("redact")
    shown = redaction.headers(spec["headers"], redact)
    return {
        "header": {name: [value] for name, value in shown.items()},
        **_body(redaction.body(body, redact)),
    }


def _optional(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def message(msg: Message) -> dict[str, Any]:
    """Return ``GET /v2/messages/{id}``'s answer for ``msg``."""
    spec = msg.spec
    return {
        "messageId": msg.id,
        "url": spec["url"],
        "method": spec["method"],
        **_shown(spec, msg.body),
        "maxRetries": spec["retries"],
        "notBefore": spec["notBefore"],
        "createdAt": spec["createdAt"],
        "callerIP": spec.get("callerIP") or "",
        **_optional(
            callback=spec.get("callback"),
            failureCallback=spec.get("failureCallback"),
            scheduleId=spec.get("scheduleId"),
            queueName=spec.get("queueName"),
            retryDelayExpression=spec.get("retryDelay"),
            topicName=spec.get("topicName"),
            endpointName=spec.get("endpointName"),
        ),
        **_labels(spec),
        **_flow(spec),
    }


def dead_letter(entry: DeadLetter) -> dict[str, Any]:
    """Return a DLQ entry as ``GET /v2/dlq`` lists it."""
    view = message(entry.message)
    view.update(
        dlqId=entry.dlq_id,
        responseStatus=entry.response_status or 0,
        responseHeader=entry.response_headers,
        retried=entry.message.retried,
    )
    try:
        view["responseBody"] = entry.response_body.decode("utf-8")
    except UnicodeDecodeError:
        view["responseBodyBase64"] = base64.b64encode(entry.response_body).decode("ascii")
    return view


def schedule(entry: Schedule) -> dict[str, Any]:
    """Return ``GET /v2/schedules/{id}``'s answer for ``entry``."""
    spec = entry.spec
    view: dict[str, Any] = {
        "scheduleId": entry.id,
        "cron": spec["cron"],
        "createdAt": int(entry.created * 1000),
        "destination": spec["url"],
        "method": spec["method"],
        **_shown(spec, entry.body),
        "retries": spec["retries"],
        "callerIP": spec.get("callerIP") or "",
        "isPaused": entry.paused,
        **_optional(
            delay=spec.get("delay") or None,
            timeout=spec.get("timeout"),
            callback=spec.get("callback"),
            failureCallback=spec.get("failureCallback"),
            queueName=spec.get("queueName"),
            retryDelayExpression=spec.get("retryDelay"),
            lastScheduleTime=int(entry.last_at * 1000) if entry.last_at else None,
            nextScheduleTime=None if entry.paused else int(entry.next_at * 1000),
        ),
        **_labels(spec),
        **_flow(spec),
    }
    return view


def queue(entry: Queue, lag: int) -> dict[str, Any]:
    """Return ``GET /v2/queues/{name}``'s answer for ``entry``."""
    return {
        "name": entry.name,
        "parallelism": entry.parallelism,
        "lag": lag,
        "paused": entry.paused,
        "createdAt": int(entry.created * 1000),
        "updatedAt": int(entry.updated * 1000),
    }
