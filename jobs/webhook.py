"""deliver-webhook (Standard Webhooks signing, SSRF-safe) and its webhook-failed callback.

deliver-webhook: payload ``{webhookId, eventType, payload, targetUrl, secret}``. The body
is ``{"type": eventType, "timestamp": ISO-8601, "data": payload}``, signed per the
Standard Webhooks specification: ``webhook-id`` is the QStash message id (stable across
retries, so receivers deduplicate), ``webhook-timestamp`` unix seconds,
``webhook-signature`` ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed by the
secret (``whsec_<base64>`` or a raw string). The request goes through
``app.outbound.safe_client``: private and metadata addresses refused on the IP connected
to, no redirects, one total deadline (``WEBHOOK_TIMEOUT``, name lookup to last byte), the
answer read raw (``Accept-Encoding: identity``, never decompressed) up to
``WEBHOOK_MAX_RESPONSE_BYTES``. A ``targetUrl`` httpx cannot request is refused with the
payload (489). Credentials in ``targetUrl`` (``https://user:pass@…``) are sent as Basic
auth and shown nowhere: every message, error and log line carries ``https://***@…``.

| target answered                 | endpoint answers QStash                       |
|---------------------------------|-----------------------------------------------|
| 2xx                             | 200 with its status and latency               |
| 410 Gone, a refused address     | 489: retrying cannot help                     |
| 429/503 with ``Retry-After`` or | 503, ``Retry-After`` = the target's (read as  |
| ``X-RateLimit-Reset``           | QStash reads it: over a day or invalid is     |
|                                 | ignored)                                      |
| anything else, timeout, no conn | 503, ``Retry-After`` = 2^retried s, at most a |
|                                 | day (the job's own retry delay, stated so the |
|                                 | JSON can carry ``targetStatus`` to the        |
|                                 | failure callback)                             |

webhook-failed: the failure callback (QStash posts it once retries are exhausted or after a
489). It decodes the callback into ``WebhookFailure``, logs one structured line and calls
every function registered with ``@on_webhook_failure``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from flask import current_app
from marshmallow import Schema, ValidationError, fields, validate

from app.delivery import Delivery
from app.errors import NonRetryableError, RetryLater
from app.jobs import job
from app.outbound import (
    AddressPolicy,
    blocked_cause,
    check_url,
    configured_client,
    deadline,
    read_capped,
    split_credentials,
)
from app.qstash.callbacks import Callback, CallbackSchema
from app.qstash.redact import redact_url, scrub
from app.qstash.timing import retry_after_seconds, retry_delay_seconds

if TYPE_CHECKING:
    from flask import Flask

SECRET_PREFIX = "whsec_"
USER_AGENT = "qstash-jobs-webhooks/1"
RETRY_DELAY = "pow(2, retried) * 1000"  # milliseconds, QStash's expression language


def signing_key(secret: str) -> bytes:
    """Return the HMAC key of a ``whsec_<base64>`` or raw-string secret."""
    if secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX) :]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a whsec_ secret must be base64 after the prefix") from None
    else:
        key = secret.encode("utf-8")
    if not key:
        raise ValueError("the secret is empty")
    return key


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def _valid_secret(value: str) -> None:
    try:
        signing_key(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _requestable(value: str) -> None:
    try:
        check_url(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class DeliverWebhookSchema(Schema):
    """The deliver-webhook payload (camelCase on the wire)."""

    webhook_id = fields.String(required=True, data_key="webhookId", validate=validate.Length(1))
    event_type = fields.String(required=True, data_key="eventType", validate=validate.Length(1))
    # The seed's `payload: unknown` may be undefined, which JSON.stringify leaves out.
    payload = fields.Raw(load_default=None, allow_none=True)
    target_url = fields.Url(
        required=True,
        data_key="targetUrl",
        schemes={"http", "https"},
        require_tld=False,
        validate=_requestable,
    )
    secret = fields.String(required=True, validate=_valid_secret)


def init_app(app: Flask) -> None:
    """Refuse to start with an unparsable WEBHOOK_ALLOWED_NETWORKS."""
    AddressPolicy(app.config["WEBHOOK_ALLOWED_NETWORKS"])


def webhook_client(app: Flask) -> httpx.Client:
    """Return this process's pooled, SSRF-safe client for the app's settings."""
    return configured_client(app)


@dataclass(frozen=True)
class TargetResponse:
    """What the target answered, read up to the cap."""

    status: int
    headers: httpx.Headers
    read: int
    truncated: bool
    latency_ms: int


def post(url: str, body: bytes, headers: dict[str, str]) -> TargetResponse:
    """POST ``body`` through the safe client within WEBHOOK_TIMEOUT in total."""
    config = current_app.config
    client = webhook_client(current_app)
    target, auth = split_credentials(url)  # never in httpx's own log line
    started = time.monotonic()
    with (
        deadline(config["WEBHOOK_TIMEOUT"]),
        client.stream("POST", target, content=body, headers=headers, auth=auth) as response,
    ):
        read, truncated = read_capped(response, config["WEBHOOK_MAX_RESPONSE_BYTES"])
    latency = round((time.monotonic() - started) * 1000)
    return TargetResponse(response.status_code, response.headers, read, truncated, latency)


def _webhook_id(delivery: Delivery) -> str:
    # Without a message id (an unsigned local call) the body is the next stable thing.
    return delivery.message_id or "msg_" + hashlib.sha256(delivery.body).hexdigest()[:32]


def _retry(
    reason: str, delivery: Delivery, errors: dict[str, Any], after: float | None
) -> RetryLater:
    # The job's own RETRY_DELAY, evaluated as QStash does: at most a day, whatever
    # Upstash-Retried says (it is unsigned: 2**1100 is no float).
    delay = after if after is not None else retry_delay_seconds(RETRY_DELAY, delivery.retried)
    return RetryLater(reason, after=delay, errors=errors)


def signed_event(
    secret: str, webhook_id: str, event_type: str, data: Any
) -> tuple[bytes, dict[str, str]]:
    """Return the body and headers of one Standard Webhooks event, signed now with ``secret``."""
    now = int(time.time())
    body = json.dumps(
        {
            "type": event_type,
            "timestamp": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
            "data": data,
        },
        separators=(",", ":"),
    ).encode()
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(now),
        "webhook-signature": sign(signing_key(secret), webhook_id, now, body),
        # The read cap counts bytes as sent; a compressed answer is never inflated.
        "accept-encoding": "identity",
    }
    return body, headers


def _send(payload: dict[str, Any], delivery: Delivery, webhook_id: str) -> TargetResponse:
    body, headers = signed_event(
        payload["secret"], webhook_id, payload["event_type"], payload["payload"]
    )
    url = payload["target_url"]
    shown = redact_url(url)
    errors = {"targetUrl": shown, "targetStatus": None}
    try:
        return post(url, body, headers)
    except httpx.TimeoutException as exc:
        raise _retry(f"{shown} timed out: {scrub(str(exc), url)}", delivery, errors, None) from None
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
        blocked = blocked_cause(exc)
        why = scrub(str(exc if blocked is None else blocked), url)
        unrequestable = httpx.InvalidURL | httpx.UnsupportedProtocol | UnicodeError
        if blocked is not None or isinstance(exc, unrequestable):
            raise NonRetryableError(f"{shown}: {why}", errors={"targetUrl": [why]}) from None
        raise _retry(f"{shown} could not be reached: {why}", delivery, errors, None) from None


@job(
    "deliver-webhook",
    schema=DeliverWebhookSchema,
    retries=5,
    retry_delay=RETRY_DELAY,
    failure_callback="webhook-failed",
)
def deliver_webhook(payload: dict[str, Any], delivery: Delivery) -> dict[str, Any]:
    """POST a signed Standard Webhooks event to the subscriber's URL."""
    webhook_id = _webhook_id(delivery)
    target = _send(payload, delivery, webhook_id)
    url, status = redact_url(payload["target_url"]), target.status
    errors = {"targetUrl": url, "targetStatus": status, "webhookId": payload["webhook_id"]}
    if 200 <= status < 300:
        return {
            "webhookId": payload["webhook_id"],
            "deliveryId": webhook_id,
            "targetStatus": status,
            "latencyMs": target.latency_ms,
            "responseBytes": target.read,
            "responseTruncated": target.truncated,
        }
    if status == 410:
        raise NonRetryableError(f"{url} answered 410 Gone: the endpoint is gone", errors=errors)
    after = None
    if status in (429, 503):
        headers = target.headers
        reset = headers.get("x-ratelimit-reset")
        after = retry_after_seconds(headers.get("retry-after"), reset, time.time())
    reason = f"{url} answered {status}"
    if 300 <= status < 400:
        reason += " (redirects are not followed)"
    raise _retry(reason, delivery, errors, after)


# --- webhook-failed -------------------------------------------------------------------

logger = logging.getLogger(__name__)
FailureHook = Callable[["WebhookFailure"], None]
failure_hooks: list[FailureHook] = []


def on_webhook_failure(hook: FailureHook) -> FailureHook:
    """Register ``hook`` to receive every ``WebhookFailure`` (use as a decorator)."""
    failure_hooks.append(hook)
    return hook


@dataclass(frozen=True)
class WebhookFailure:
    """A webhook that QStash gave up delivering, as the failure callback tells it."""

    webhook_id: str | None
    event_type: str | None
    #: Credentials masked (``https://***@host/``): the raw payload is in ``callback``.
    target_url: str | None
    #: The subscriber's last HTTP status if it answered, else our endpoint's status.
    last_status: int | None
    message: str | None
    dlq_id: str | None
    message_id: str | None
    retried: int
    max_retries: int | None
    callback: Callback

    @classmethod
    def from_callback(cls, callback: Callback) -> WebhookFailure:
        """Read the original payload and our endpoint's last answer out of ``callback``."""
        source = callback.json_source_body()
        source = source if isinstance(source, dict) else {}
        answer = callback.json_body()
        answer = answer if isinstance(answer, dict) else {}
        errors = answer.get("errors")
        details = errors if isinstance(errors, dict) else {}
        target_status = details.get("targetStatus")
        return cls(
            webhook_id=_text(source.get("webhookId")),
            event_type=_text(source.get("eventType")),
            target_url=_redacted(_text(source.get("targetUrl"))),
            last_status=target_status if isinstance(target_status, int) else callback.status,
            message=_text(answer.get("message")),
            dlq_id=callback.dlq_id,
            message_id=callback.source_message_id,
            retried=callback.retried,
            max_retries=callback.max_retries,
            callback=callback,
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _redacted(url: str | None) -> str | None:
    return None if url is None else redact_url(url)


@job("webhook-failed", schema=CallbackSchema)
def webhook_failed(callback: Callback, delivery: Delivery) -> dict[str, Any]:
    """Record a webhook QStash gave up on and hand it to the registered hooks."""
    failure = WebhookFailure.from_callback(callback)
    fields_ = {
        "webhook_id": failure.webhook_id,
        "target": failure.target_url,
        "last_status": failure.last_status,
        "dlq_id": failure.dlq_id,
        "message_id": failure.message_id,
        "retried": failure.retried,
    }
    logger.warning(
        "webhook delivery failed %s",
        " ".join(f"{name}={value}" for name, value in fields_.items()),
        extra={"webhook_failure": fields_},
    )
    for hook in failure_hooks:
        hook(failure)
    return {"webhookId": failure.webhook_id, "dlqId": failure.dlq_id, "handled": True}
