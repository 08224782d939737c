"""The answers a job endpoint gives QStash: JSON results and the framework's JSON errors.

| what happened                                   | status                                    |
|-------------------------------------------------|-------------------------------------------|
| the handler returned                            | 200 + JSON of the return value            |
| ``NonRetryableError`` (bad JSON, schema error)  | 489 + ``Upstash-NonRetryable-Error: true``|
| ``RetryLater(after=…)``                         | 503 + ``Retry-After`` (1 s to 1 day)      |
| an ``HTTPException``                            | its status                                |
| any other exception                             | 500, logged with message id + traceback   |

Error bodies are ``{"code", "status", "message", "errors"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import Response, current_app
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from app.errors import JobError, RetryLater
from app.payload import schema_error
from app.qstash.protocol import NON_RETRYABLE_HEADER, NON_RETRYABLE_STATUS

if TYPE_CHECKING:
    from app.delivery import Delivery

__all__ = [
    "error_answer",
    "error_response",
    "internal_error",
    "job_error_response",
    "json_response",
]


def json_response(value: Any) -> Response:
    """Answer ``value`` as strict JSON: NaN and Infinity, which JSON has not, raise."""
    text = current_app.json.dumps(value, allow_nan=False)
    response: Response = current_app.response_class(f"{text}\n", mimetype="application/json")
    return response


def error_response(
    status: int,
    code: str,
    message: str,
    errors: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Return the framework's JSON error: ``{"code", "status", "message", "errors"}``.

    Errors that are not JSON are left out (and logged), so the status always goes out.
    """
    body = {"code": code, "status": status, "message": str(message), "errors": errors or {}}
    try:
        response = json_response(body)
    except (TypeError, ValueError, RecursionError):
        current_app.logger.warning(
            "the errors of a %d %s answer are not JSON; left out", status, code
        )
        response = json_response({**body, "errors": {}})
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def job_error_response(exc: JobError) -> Response:
    if isinstance(exc, RetryLater):
        seconds = exc.retry_after_seconds
        return error_response(503, exc.code, exc.message, exc.errors, {"Retry-After": str(seconds)})
    return error_response(
        NON_RETRYABLE_STATUS, exc.code, exc.message, exc.errors, {NON_RETRYABLE_HEADER: "true"}
    )


def error_answer(exc: Exception, delivery: Delivery) -> Response:
    """Return the answer ``exc`` asks for; a 500 if it asks for none or it cannot be built."""
    try:
        answer = _chosen_answer(exc)
    except Exception as failure:
        current_app.logger.error(
            "could not build the answer to %s: message_id=%s",
            type(exc).__name__,
            delivery.message_id,
            exc_info=failure,
        )
        answer = None
    return answer if answer is not None else internal_error(exc, delivery.job, delivery)


def _chosen_answer(exc: Exception) -> Response | None:
    if isinstance(exc, JobError):
        return job_error_response(exc)
    if isinstance(exc, ValidationError):
        return job_error_response(schema_error(exc))
    if isinstance(exc, HTTPException):
        return error_response(exc.code or 500, "http_error", exc.description or exc.name)
    return None


def internal_error(exc: BaseException, job: str | None, delivery: Delivery | None) -> Response:
    message_id = delivery.message_id if delivery else None
    current_app.logger.error(
        "job %s failed: message_id=%s retried=%d",
        job,
        message_id,
        delivery.retried if delivery else 0,
        exc_info=exc,
        extra={"job": job, "message_id": message_id},
    )
    return error_response(
        500,
        "internal_error",
        f"job {job!r} raised {type(exc).__name__}; QStash will retry"
        " (the traceback is in the app's log)",
    )
