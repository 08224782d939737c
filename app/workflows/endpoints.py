"""``POST /api/workflows/events/<event_id>``: ``notify(event_id, data)`` over HTTP.

The JSON body is the event's data (an empty body: no data, which the waits get as ``{}``,
as from ``notify(event_id)``). Two ways in:

- **QStash-signed**, through the same guard as a job (``with_qstash``): whoever holds the
  QStash token notifies by publishing to ``event_url(event_id)``, and QStash's retries
  are deduplicated by the duplicate guard, logged under ``NOTIFY_JOB``;
- ``Authorization: Bearer <WORKFLOW_NOTIFY_TOKEN>``, compared in constant time, for a
  caller without QStash. Unset, only signed calls are accepted.

Answers ``{"event": id, "resumed": [run ids]}``. A request with neither gets 401; bad
JSON, an oversized body (``QSTASH_MAX_BODY_SIZE``) or a bad event id get 489 when signed
(QStash must not retry them) and 400/413 otherwise. Mounted by ``app.blueprint`` only
when the app declares a workflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from app.answers import error_response, json_response
from app.errors import ConfigurationError, NonRetryableError
from app.payload import load_payload
from app.qstash.protocol import public_url
from app.receiver import bearer_matches, bearer_token, read_body, with_qstash
from app.workflows.context import check_event_id
from app.workflows.engine import NotifyIncomplete, notify

if TYPE_CHECKING:
    from flask import Flask

    from app.delivery import Delivery

__all__ = ["EVENTS_PATH", "NOTIFY_JOB", "event_url", "init_app"]

EVENTS_PATH = "/api/workflows/events"
#: The name signed notifications go by in the delivery log, the guard and the metrics
#: (not a valid job name, so no job can share their rows).
NOTIFY_JOB = "workflows:notify"
MIN_TOKEN_LENGTH = 16


def event_url(event_id: str, app_url: str | None = None) -> str:
    """Return the URL to publish ``event_id``'s notification to (``APP_URL`` by default)."""
    base = current_app.config["APP_URL"] if app_url is None else app_url
    return public_url(base, f"{EVENTS_PATH}/{event_id}", b"")


def _notified(event_id: str, body: bytes) -> dict[str, Any]:
    data = load_payload(body, None)  # strict JSON, or NonRetryableError
    check_event_id(event_id)
    try:
        resumed = notify(event_id, data) if body.strip() else notify(event_id)
    except NotifyIncomplete as exc:
        # Every wait got the event (a retry would change nothing): say which runs go on
        # only at their timeout, or after `flask workflows resume`.
        return {"event": event_id, "resumed": exc.resumed, "unpublished": exc.unpublished}
    return {"event": event_id, "resumed": resumed}


def _signed(payload: Any, delivery: Delivery, event_id: str) -> dict[str, Any]:
    return _notified(event_id, delivery.body)


_signed_view = with_qstash(job=NOTIFY_JOB)(_signed)


def _unauthorized() -> Response:
    message = (
        "send Authorization: Bearer <WORKFLOW_NOTIFY_TOKEN>"
        if current_app.config.get("WORKFLOW_NOTIFY_TOKEN")
        else "WORKFLOW_NOTIFY_TOKEN is not set: only QStash-signed notifications are accepted"
    )
    response = error_response(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _with_token(event_id: str) -> Response:
    limit = int(current_app.config["QSTASH_MAX_BODY_SIZE"])
    try:
        body = read_body(request, limit)
    except RequestEntityTooLarge:
        message = f"the body is larger than QSTASH_MAX_BODY_SIZE ({limit} bytes)"
        return error_response(413, "payload_too_large", message)
    try:
        return json_response(_notified(event_id, body))
    except NonRetryableError as exc:
        return error_response(400, exc.code, exc.message, exc.errors)


def notify_view(event_id: str) -> Response:
    """Notify ``event_id`` with the JSON body, for a signed or a bearer-token caller."""
    if "Upstash-Signature" not in request.headers and bearer_token(request) is not None:
        token: str | None = current_app.config.get("WORKFLOW_NOTIFY_TOKEN")
        if token and bearer_matches(request, token):
            return _with_token(event_id)
        return _unauthorized()
    return _signed_view(event_id=event_id)


def init_app(app: Flask) -> None:
    """Mount the notification endpoint; refuse a guessable ``WORKFLOW_NOTIFY_TOKEN``."""
    token = app.config.get("WORKFLOW_NOTIFY_TOKEN")
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"WORKFLOW_NOTIFY_TOKEN must be at least {MIN_TOKEN_LENGTH} characters"
            " (try: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    app.add_url_rule(
        f"{EVENTS_PATH}/<path:event_id>",
        "workflow_notify",
        notify_view,
        methods=["POST"],
    )
