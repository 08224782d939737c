"""``with_qstash``: the guard every job endpoint runs behind.

raw body (read once, size-capped) → ``verify()`` against APP_URL + path → ``Delivery`` →
``schema.load(json)`` → handler(payload, delivery) → a status QStash understands:

| outcome                                         | status                                    |
|-------------------------------------------------|-------------------------------------------|
| handler returned                                | 200 + JSON of the return value            |
| missing or bad signature                        | 401 (QStash retries; a forger gets nothing)|
| body too large, invalid JSON, schema error,     | 489 + ``Upstash-NonRetryable-Error: true``|
| ``NonRetryableError``                           | (straight to the DLQ)                     |
| ``RetryLater(after=…)``                         | 503 + ``Retry-After`` (1 s to 1 day)      |
| any other exception                             | 500, logged with message id + traceback   |

Who does what on the way: ``app.qstash.signature`` verifies the token (pure),
``app.delivery`` is the value the handler gets, ``app.payload`` turns the body into the
payload, ``app.hooks`` are the store's and metrics' observers, ``app.answers`` builds every
answer. This module only wires them to Flask's request.

The handler never runs unless the request passed every check. Whatever raises between
the verification and the answer (a hook, the schema, the handler, building the answer,
serialising the result), the answer is the framework's JSON error and every
after-delivery hook runs, so the duplicate guard never keeps a claim held.
"""

from __future__ import annotations

import functools
import hmac
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, overload

from flask import Response, current_app, request
from marshmallow import Schema
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app import config as app_config
from app.answers import error_answer, error_response, internal_error, json_response
from app.delivery import Delivery
from app.errors import MalformedSignature, MissingSignature, SignatureError
from app.hooks import DeliveryHook, hooks_of, mark_refused
from app.payload import load_payload
from app.qstash.protocol import NON_RETRYABLE_HEADER, NON_RETRYABLE_STATUS, public_url
from app.qstash.signature import verify

if TYPE_CHECKING:
    from flask import Request

__all__ = [
    "GuardedView",
    "bearer_matches",
    "bearer_token",
    "expected_url",
    "guard",
    "read_body",
    "with_qstash",
]


def expected_url(req: Request, app_url: str) -> str:
    """Return the public URL of this request: APP_URL + path (+ query), never Host."""
    return public_url(app_url, req.path, req.query_string)


def _authenticate(
    req: Request, config: Mapping[str, Any], body: bytes, url: str
) -> dict[str, Any] | None:
    """Return the verified claims, or None for an unsigned call allowed in debug."""
    token = req.environ.get("HTTP_UPSTASH_SIGNATURE")
    if token is None:
        if app_config.unsigned_allowed(config):
            return None
        raise MissingSignature("the request has no Upstash-Signature header")
    if not token.strip():
        raise MalformedSignature("the Upstash-Signature header is empty")
    return verify(
        token,
        body,
        url=url,
        keys=(config["QSTASH_CURRENT_SIGNING_KEY"], config["QSTASH_NEXT_SIGNING_KEY"]),
        tolerance=config["QSTASH_CLOCK_TOLERANCE"],
    )


def bearer_token(req: Request) -> str | None:
    """Return the token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, given = req.headers.get("Authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


def bearer_matches(req: Request, token: str) -> bool:
    """Say whether ``req`` carries ``token`` as its bearer token, in constant time."""
    given = bearer_token(req)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def read_body(req: Request, limit: int) -> bytes:
    """Read the whole body once (cached), refusing more than ``limit`` bytes with
    ``RequestEntityTooLarge``."""
    # werkzeug refuses a Content-Length over max_content_length before reading a byte,
    # but cuts a body without one (chunked) at it: reading one byte past the limit tells
    # such a body apart from one of exactly the limit. cache: the handler may read it too.
    req.max_content_length = limit + 1
    body = req.get_data(cache=True)
    if len(body) > limit:
        raise RequestEntityTooLarge()
    return body


def _answer(
    handler: Callable[..., Any],
    hooks: list[DeliveryHook],
    schema: Schema | None,
    delivery: Delivery,
    view_args: dict[str, Any],
) -> Response:
    """Load the payload, let the hooks answer first, run the handler; never raise."""
    try:
        payload = load_payload(delivery.body, schema)
        for hook in hooks:
            early = hook.before_handler(delivery)
            if early is not None:
                return early
        result = handler(payload, delivery, **view_args)
        if isinstance(result, Response):
            return result
        return json_response(result)
    except Exception as exc:
        return error_answer(exc, delivery)


def guard(
    handler: Callable[..., Any],
    *,
    schema: Schema | None,
    job: str | None,
    view_args: dict[str, Any],
) -> Response:
    """Run ``handler`` for the current request behind every QStash check.

    Every after-delivery hook runs once per request, whatever raised before: a claim
    the guard took is always completed or released.
    """
    hooks = hooks_of(current_app)
    started = time.perf_counter()
    delivery: Delivery | None = None
    try:
        admitted = _admit(job)
        if isinstance(admitted, Response):
            response = admitted
        else:
            delivery = admitted
            response = _answer(handler, hooks, schema, delivery, view_args)
    except Exception as exc:  # in reading or verifying the request: a bug
        response = internal_error(exc, job, delivery)
    except BaseException as exc:
        # The worker is being stopped (a timeout, ^C): no answer will go out, but the
        # hooks still see one, so the guard releases its claim for QStash's retry.
        _observe(hooks, job, delivery, internal_error(exc, job, delivery), started)
        raise
    _observe(hooks, job, delivery, response, started)
    return response


def _observe(
    hooks: list[DeliveryHook],
    job: str | None,
    delivery: Delivery | None,
    response: Response,
    started: float,
) -> None:
    if not hooks:
        return
    duration = time.perf_counter() - started
    for hook in hooks:
        try:
            hook.after_delivery(job, delivery, response, duration)
        except Exception:
            current_app.logger.exception("delivery hook %r failed", hook)


def _admit(job: str | None) -> Delivery | Response:
    """Read and verify the current request: its ``Delivery``, or the refusal to answer."""
    config = current_app.config
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    url = expected_url(req, config["APP_URL"])
    limit = config["QSTASH_MAX_BODY_SIZE"]
    try:
        body = read_body(req, limit)
    except RequestEntityTooLarge:
        message = f"the body is larger than QSTASH_MAX_BODY_SIZE ({limit} bytes)"
        headers = {NON_RETRYABLE_HEADER: "true"}
        answer = error_response(NON_RETRYABLE_STATUS, "payload_too_large", message, None, headers)
        return mark_refused(answer, "payload_too_large")
    except HTTPException:  # werkzeug's ClientDisconnected: the body ended early
        answer = error_response(400, "unreadable_body", "the body ended before its length")
        return mark_refused(answer, "unreadable_body")
    try:
        claims = _authenticate(req, config, body, url)
    except SignatureError as exc:
        current_app.logger.warning("rejected delivery to %s from %s: %s", url, req.remote_addr, exc)
        return mark_refused(error_response(401, exc.code, str(exc)), exc.code)
    return Delivery.from_request(req, body=body, url=url, job=job, claims=claims)


#: A guarded view: Flask calls it with the URL's arguments and it answers a Response.
GuardedView = Callable[..., Response]


@overload
def with_qstash(view: Callable[..., Any], /) -> GuardedView: ...


@overload
def with_qstash(
    *, schema: type[Schema] | Schema | None = None, job: str | None = None
) -> Callable[[Callable[..., Any]], GuardedView]: ...


def with_qstash(
    view: Callable[..., Any] | None = None,
    /,
    *,
    schema: type[Schema] | Schema | None = None,
    job: str | None = None,
) -> GuardedView | Callable[[Callable[..., Any]], GuardedView]:
    """Guard a Flask view so it only runs for verified QStash deliveries.

    The view is called as ``view(payload, delivery, **url_args)``. Use it bare
    (``@with_qstash``) for a JSON payload, or ``@with_qstash(schema=MySchema)``.
    """
    instance = schema() if isinstance(schema, type) else schema

    def decorator(handler: Callable[..., Any]) -> GuardedView:
        name = job or handler.__name__

        @functools.wraps(handler)
        def guarded(**view_args: Any) -> Response:
            return guard(handler, schema=instance, job=name, view_args=view_args)

        return guarded

    if view is not None:
        return decorator(view)
    return decorator
