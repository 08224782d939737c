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

The handler never runs unless the request passed every check. Whatever raises between
the verification and the answer (a hook, the schema, the handler, building the answer,
serialising the result), the answer is the framework's JSON error and every
after-delivery hook runs, so the duplicate guard never keeps a claim held.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote

from flask import Response, current_app, request
from marshmallow import Schema, ValidationError
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app import config as app_config
from app.errors import (
    JobError,
    MalformedSignature,
    MissingSignature,
    NonRetryableError,
    RetryLater,
    SignatureError,
)
from app.qstash.signature import verify

if TYPE_CHECKING:
    from flask import Flask, Request

NON_RETRYABLE_STATUS = 489
NON_RETRYABLE_HEADER = "Upstash-NonRetryable-Error"

# Headers QStash or the HTTP stack add; everything else on a delivery was forwarded by
# the publisher (``Upstash-Forward-X: v`` arrives as ``X: v``).
_TRANSPORT_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "user-agent",
        "accept",
        "accept-encoding",
        "connection",
        "transfer-encoding",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-real-ip",
        "forwarded",
        "via",
    }
)
# RFC 3986 characters that may appear unescaped in a path.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery attempt of a QStash message, as the endpoint received it.

    Only the body and URL are covered by the signature; the ``Upstash-*`` headers read
    here (message id, retried, …) are QStash's word, not signed facts.
    """

    message_id: str | None
    retried: int
    schedule_id: str | None
    caller_ip: str | None
    topic_name: str | None
    region: str | None
    #: The raw body, byte for byte as signed.
    body: bytes
    #: The public URL this delivery was verified against (the token's ``sub``).
    url: str
    job: str | None = None
    #: False only for unsigned calls accepted under FLASK_DEBUG + QSTASH_ALLOW_UNSIGNED.
    verified: bool = True
    claims: Mapping[str, Any] = field(default_factory=dict)
    #: Every header of the request, as received.
    request_headers: Headers = field(default_factory=Headers, repr=False)

    @property
    def attempt(self) -> int:
        """The 1-based attempt number (``retried`` + 1)."""
        return self.retried + 1

    @property
    def headers(self) -> dict[str, str]:
        """Return the headers the publisher forwarded (``Upstash-Forward-X`` arrives as X)."""
        return {
            name: value
            for name, value in self.request_headers.items()
            if name.lower() not in _TRANSPORT_HEADERS and not name.lower().startswith("upstash-")
        }

    @classmethod
    def from_request(
        cls,
        req: Request,
        *,
        body: bytes,
        url: str,
        job: str | None,
        claims: Mapping[str, Any] | None,
    ) -> Delivery:
        """Build a ``Delivery`` from an incoming request's QStash headers."""
        # Read straight from the WSGI environ: this runs on every delivery, and six
        # EnvironHeaders look-ups cost more than the rest of the Delivery together.
        environ = req.environ
        return cls(
            message_id=environ.get("HTTP_UPSTASH_MESSAGE_ID"),
            retried=retried_count(environ.get("HTTP_UPSTASH_RETRIED")),
            schedule_id=environ.get("HTTP_UPSTASH_SCHEDULE_ID"),
            caller_ip=environ.get("HTTP_UPSTASH_CALLER_IP"),
            topic_name=environ.get("HTTP_UPSTASH_TOPIC_NAME"),
            region=environ.get("HTTP_UPSTASH_REGION"),
            body=body,
            url=url,
            job=job,
            verified=claims is not None,
            claims=claims or {},
            request_headers=req.headers,
        )


#: The highest ``Upstash-Retried`` read (the dev server's cap on retries too). The header
#: is not signed: bounded, ``2 ** retried`` and ``exp(2.5 * retried)`` stay finite floats.
MAX_RETRIED = 100
# More digits than this (leading zeros aside) is past MAX_RETRIED whatever they say.
_RETRIED_DIGITS = len(str(MAX_RETRIED))


def retried_count(raw: str | None) -> int:
    """Read ``Upstash-Retried``: ASCII digits, capped at MAX_RETRIED; anything else is 0."""
    if raw is None:
        return 0
    digits = raw.strip()
    # isdigit() alone also takes "³" and "٣", which int() reads as numbers.
    if not (digits.isascii() and digits.isdigit()):
        return 0
    digits = digits.lstrip("0")
    if len(digits) > _RETRIED_DIGITS:
        return MAX_RETRIED
    return min(int(digits or "0"), MAX_RETRIED)


def _json(value: Any) -> Response:
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
        response = _json(body)
    except (TypeError, ValueError, RecursionError):
        current_app.logger.warning(
            "the errors of a %d %s answer are not JSON; left out", status, code
        )
        response = _json({**body, "errors": {}})
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def expected_url(req: Request, app_url: str) -> str:
    """Return the public URL of this request: APP_URL + path (+ query), never Host."""
    return _public_url(app_url, req.path, req.query_string)


# Job endpoints are few, so their URLs are built once; varied query strings can only
# cycle this bounded cache.
@functools.lru_cache(maxsize=512)
def _public_url(app_url: str, path: str, query: bytes) -> str:
    url = app_url.rstrip("/") + quote(path, safe=_PATH_SAFE)
    if query:
        url += "?" + query.decode("latin-1")
    return url


def load_payload(body: bytes, schema: Schema | None) -> Any:
    """Parse the JSON body and load it with ``schema``; raise ``NonRetryableError`` if bad.

    An empty body (what a QStash schedule created without one delivers) is None without
    a schema and ``{}`` with one, so the schema's defaults and required fields apply.
    """
    if not body.strip():
        if schema is None:
            return None
        data: Any = {}
    else:
        try:
            # What json.loads(bytes) does, with a decoder made once, not once per call.
            data = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
        except (ValueError, RecursionError) as exc:
            raise _invalid_json(exc) from None
    if schema is None:
        return data
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise _schema_error(exc) from None
    except RecursionError:
        raise NonRetryableError(
            "the payload is nested too deeply", code="invalid_payload"
        ) from None


def _not_json(constant: str) -> Any:
    # Python's json reads NaN, Infinity and -Infinity, which JSON (RFC 8259) has not.
    raise ValueError(f"{constant} is not a JSON value")


def _finite(text: str) -> float:
    # 1e999 is a JSON number, but no float: Python would read it as infinity.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


#: JSON as RFC 8259 has it: no NaN, no Infinity, no number that is no float.
_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)


def _invalid_json(exc: Exception) -> NonRetryableError:
    # The parser's own messages are short ("Expecting value: line 1 column 1 (char 0)").
    return NonRetryableError(f"the body is not valid JSON: {exc}", code="invalid_json")


def _schema_error(exc: ValidationError) -> NonRetryableError:
    message = "the payload does not match the job's schema"
    return NonRetryableError(message, errors=exc.messages, code="invalid_payload")


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


def _read_body(req: Request, limit: int) -> bytes:
    # werkzeug refuses a Content-Length over max_content_length before reading a byte,
    # but cuts a body without one (chunked) at it: reading one byte past the limit tells
    # such a body apart from one of exactly the limit. cache: the handler may read it too.
    req.max_content_length = limit + 1
    body = req.get_data(cache=True)
    if len(body) > limit:
        raise RequestEntityTooLarge()
    return body


def _job_error_response(exc: JobError) -> Response:
    if isinstance(exc, RetryLater):
        seconds = exc.retry_after_seconds
        return error_response(503, exc.code, exc.message, exc.errors, {"Retry-After": str(seconds)})
    return error_response(
        NON_RETRYABLE_STATUS, exc.code, exc.message, exc.errors, {NON_RETRYABLE_HEADER: "true"}
    )


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
        return _json(result)
    except Exception as exc:
        return _error_answer(exc, delivery)


def _error_answer(exc: Exception, delivery: Delivery) -> Response:
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
    return answer if answer is not None else _internal_error(exc, delivery.job, delivery)


def _chosen_answer(exc: Exception) -> Response | None:
    if isinstance(exc, JobError):
        return _job_error_response(exc)
    if isinstance(exc, ValidationError):
        return _job_error_response(_schema_error(exc))
    if isinstance(exc, HTTPException):
        return error_response(exc.code or 500, "http_error", exc.description or exc.name)
    return None


def _internal_error(exc: BaseException, job: str | None, delivery: Delivery | None) -> Response:
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


HOOKS = "qstash_jobs.delivery_hooks"


class DeliveryHook(Protocol):
    """An observer of deliveries (the delivery log, the duplicate guard, metrics).

    Register one with ``add_delivery_hook(app, hook)``.
    """

    def before_handler(self, delivery: Delivery) -> Response | None:
        """Return a response to answer instead of running the handler, or None to run it.

        Called only for verified deliveries whose payload loaded. An exception here
        answers 500 (QStash retries) and the handler does not run.
        """

    def after_delivery(
        self, job: str | None, delivery: Delivery | None, response: Response, duration: float
    ) -> None:
        """Observe the answer to a request, whatever happened before it.

        ``delivery`` is None when the request was refused before its signature was
        verified: then everything it carries is the unauthenticated caller's, and only
        :func:`refusal` (a fixed set of codes) may be kept. Exceptions are logged and
        never change the answer.
        """


def add_delivery_hook(app: Flask, hook: DeliveryHook) -> None:
    """Register ``hook`` to observe every delivery ``with_qstash`` handles in ``app``."""
    app.extensions.setdefault(HOOKS, []).append(hook)


def outcome(status: int, *, verified: bool = True) -> str:
    """Name the outcome QStash sees: ok, retry, non-retryable, bad-signature or error.

    ``bad-signature`` is a 401 given before verification; a verified delivery's 401 (a
    handler's own) is an ``error``.
    """
    if 200 <= status < 300:
        return "ok"
    if status == 401 and verified:
        return "error"
    return _OUTCOMES.get(status, "error")


_OUTCOMES = {401: "bad-signature", 489: "non-retryable", 503: "retry"}
_REFUSAL = "qstash_jobs_refusal"
#: Reasons to refuse a request before verifying it, besides the signature errors' codes.
BODY_REFUSALS = ("payload_too_large", "unreadable_body")


@functools.cache  # the error classes are all declared at import: read on every refusal
def refusal_reasons() -> frozenset[str]:
    """Return every reason :func:`refusal` can give: a fixed set, fit for a metric label."""
    codes = {SignatureError.code, *BODY_REFUSALS}
    pending = [SignatureError]
    while pending:
        for subclass in pending.pop().__subclasses__():
            codes.add(subclass.code)
            pending.append(subclass)
    return frozenset(codes)


def _refused(response: Response, reason: str) -> Response:
    if reason not in refusal_reasons():
        reason = SignatureError.code
    setattr(response, _REFUSAL, reason)
    return response


def refusal(response: Response) -> str | None:
    """Return why the request was refused before verification, or None if it was not.

    One of :func:`refusal_reasons`, never a value the caller chose.
    """
    reason: str | None = getattr(response, _REFUSAL, None)
    return reason


#: The response header the duplicate guard sets when it answered instead of the handler.
GUARD_HEADER = "X-Duplicate-Delivery"
_GUARD_VERDICT = "qstash_jobs_guard_verdict"


def mark_guard_answer(response: Response, verdict: str) -> Response:
    """Mark ``response`` as the duplicate guard's (``replayed`` or ``busy``): in the
    header, for QStash's logs and the caller, and as an attribute, for the hooks."""
    response.headers[GUARD_HEADER] = verdict
    setattr(response, _GUARD_VERDICT, verdict)
    return response


def guard_verdict(response: Response) -> str | None:
    """Return the guard's verdict on ``response``, or None when the handler answered.

    Read by the log and metrics hooks on every delivery: an attribute, because looking
    the header up raises and catches a KeyError when it is absent, the usual case.
    """
    verdict: str | None = getattr(response, _GUARD_VERDICT, None)
    return verdict


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
    hooks: list[DeliveryHook] = current_app.extensions.get(HOOKS, [])
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
        response = _internal_error(exc, job, delivery)
    except BaseException as exc:
        # The worker is being stopped (a timeout, ^C): no answer will go out, but the
        # hooks still see one, so the guard releases its claim for QStash's retry.
        _observe(hooks, job, delivery, _internal_error(exc, job, delivery), started)
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
        body = _read_body(req, limit)
    except RequestEntityTooLarge:
        message = f"the body is larger than QSTASH_MAX_BODY_SIZE ({limit} bytes)"
        headers = {NON_RETRYABLE_HEADER: "true"}
        answer = error_response(NON_RETRYABLE_STATUS, "payload_too_large", message, None, headers)
        return _refused(answer, "payload_too_large")
    except HTTPException:  # werkzeug's ClientDisconnected: the body ended early
        answer = error_response(400, "unreadable_body", "the body ended before its length")
        return _refused(answer, "unreadable_body")
    try:
        claims = _authenticate(req, config, body, url)
    except SignatureError as exc:
        current_app.logger.warning("rejected delivery to %s from %s: %s", url, req.remote_addr, exc)
        return _refused(error_response(401, exc.code, str(exc)), exc.code)
    return Delivery.from_request(req, body=body, url=url, job=job, claims=claims)


F = TypeVar("F", bound=Callable[..., Any])


def with_qstash(
    view: Callable[..., Any] | None = None,
    /,
    *,
    schema: type[Schema] | Schema | None = None,
    job: str | None = None,
) -> Any:
    """Guard a Flask view so it only runs for verified QStash deliveries.

    The view is called as ``view(payload, delivery, **url_args)``. Use it bare
    (``@with_qstash``) for a JSON payload, or ``@with_qstash(schema=MySchema)``.
    """
    instance = schema() if isinstance(schema, type) else schema

    def decorator(handler: F) -> Callable[..., Response]:
        name = job or handler.__name__

        @functools.wraps(handler)
        def guarded(**view_args: Any) -> Response:
            return guard(handler, schema=instance, job=name, view_args=view_args)

        return guarded

    if view is not None:
        return decorator(view)
    return decorator
