"""The send-email payload: one recipient, a known template, the data that template reads.

The seed's publishers send ``{to, template, data}`` with ``data`` a flat
``Record<string, string | number>``, so a number is accepted where text is expected
(``Text``), and each template requires only what its email is meaningless without: the
reset link of ``password_reset``, the order id and total of ``order_confirmed``. Every
richer field (``name``, ``appName``, ``loginUrl``, ``items``, ``currency``…) is optional.
``to`` is one address, bare or ``Name <address>`` as Resend takes it (``Recipient``).
Lists are capped at ``MAX_LINES`` entries. Rendering and sending live in ``jobs/email.py``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

_HTTP = {"http", "https"}
#: The most lines one email lists (order items, jobs, failures per job): the body cap
#: alone (1 MiB) lets 12,000 order lines through, 2 s of rendering for a 2 MB email.
MAX_LINES = 500


def number_text(value: float) -> str:
    """Return a JSON number as JavaScript's ``String(value)`` writes it (``42``, ``4.5``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


class Text(fields.String):
    """Text of at most ``max_length`` characters; a JSON number stands for its text.

    Blank text (empty or whitespace) is refused when the field is required and loads as
    None (absent) otherwise, so a template never greets "Hi ,".
    """

    default_error_messages = {
        "blank": "May not be blank.",
        "too_long": "Longer than maximum length {max_length}.",
    }

    def __init__(self, *, max_length: int = 200, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise self.make_error("invalid")
            value = number_text(value)
        text = super()._deserialize(value, attr, data, **kwargs)
        if not text.strip():
            if self.required:
                raise self.make_error("blank")
            return None
        if len(text) > self.max_length:
            raise self.make_error("too_long", max_length=self.max_length)
        return text


class Lines(fields.List[Any]):
    """A list of at most ``MAX_LINES`` entries, counted before any entry is loaded."""

    default_error_messages = {"too_many": f"Longer than maximum length {MAX_LINES}."}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, list) and len(value) > MAX_LINES:
            raise self.make_error("too_many")
        return super()._deserialize(value, attr, data, **kwargs)


def _optional_url(data_key: str) -> fields.Url:
    return fields.Url(data_key=data_key, load_default=None, schemes=_HTTP)


class TemplateData(Schema):
    """Base of the per-template data schemas: extra fields are ignored.

    ``name`` (the greeting) and ``appName`` (the product, else ``EMAIL_APP_NAME``) are
    optional in every template.
    """

    class Meta:
        unknown = EXCLUDE

    name = Text(load_default=None)
    app_name = Text(data_key="appName", load_default=None)


class WelcomeData(TemplateData):
    login_url = _optional_url("loginUrl")


class PasswordResetData(TemplateData):
    reset_url = fields.Url(required=True, data_key="resetUrl", schemes=_HTTP)
    expires_in_minutes = fields.Integer(
        data_key="expiresInMinutes", load_default=60, validate=validate.Range(min=1, max=10080)
    )


class OrderItem(Schema):
    name = Text(required=True)
    quantity = fields.Integer(required=True, validate=validate.Range(min=1))
    unit_price = fields.Decimal(
        required=True, data_key="unitPrice", places=2, validate=validate.Range(min=0)
    )


class OrderConfirmedData(TemplateData):
    order_id = Text(required=True, data_key="orderId", max_length=100)
    items = Lines(fields.Nested(OrderItem), load_default=list)
    total = fields.Decimal(required=True, places=2, validate=validate.Range(min=0))
    currency = fields.String(load_default=None, validate=validate.Regexp(r"^[A-Z]{3}$"))
    order_url = _optional_url("orderUrl")


class SubscriptionEndingData(TemplateData):
    plan_name = Text(data_key="planName", load_default=None, max_length=100)
    ends_on = fields.Date(data_key="endsOn", load_default=None)
    renew_url = _optional_url("renewUrl")


class FailureItem(Schema):
    at = fields.AwareDateTime(required=True)
    message_id = fields.String(data_key="messageId", load_default=None, allow_none=True)
    attempt = fields.Integer(required=True, validate=validate.Range(min=1))
    status = fields.Integer(required=True)
    error = fields.String(load_default=None, allow_none=True)
    dlq_id = fields.String(data_key="dlqId", load_default=None, allow_none=True)


class JobFailures(Schema):
    job = Text(required=True)
    failures = fields.Integer(required=True, validate=validate.Range(min=0))
    attempts = fields.Integer(required=True, validate=validate.Range(min=0))
    latest = Lines(fields.Nested(FailureItem), load_default=list)


class DailyDigestData(TemplateData):
    """The daily-digest data (jobs/cron.py): failed attempts by job over [since, until]."""

    since = fields.Date(required=True)
    until = fields.Date(required=True)
    jobs = Lines(fields.Nested(JobFailures), required=True)


class JobWeek(Schema):
    job = Text(required=True)
    total = fields.Integer(required=True, validate=validate.Range(min=0))
    failures = fields.Integer(required=True, validate=validate.Range(min=0))
    failure_rate = fields.Float(
        required=True, data_key="failureRate", validate=validate.Range(0, 1)
    )
    p50_ms = fields.Float(data_key="p50Ms", load_default=None, allow_none=True)
    p95_ms = fields.Float(data_key="p95Ms", load_default=None, allow_none=True)


class WeeklyReportData(TemplateData):
    """The weekly-report data (jobs/cron.py): per-job counts and durations over a week."""

    since = fields.Date(required=True)
    until = fields.Date(required=True)
    jobs = Lines(fields.Nested(JobWeek), required=True)


_SAMPLE_FAILURE = {
    "at": "2026-11-26T14:03:12+00:00",
    "messageId": "msg_26hZCxZCuWyyTWPmSVBrNC1RADwpgWxPcak2rQD51EMjFMuzcW7qYXpPiDyw8Gd",
    "attempt": 4,
    "status": 500,
    "error": "ConnectError: <upstream> refused the connection",
    "dlqId": "1725323658779-0",
}


@dataclass(frozen=True)
class EmailTemplate:
    """A template's data schema and the sample data its preview renders."""

    schema: Schema
    sample: dict[str, Any]


TEMPLATES: dict[str, EmailTemplate] = {
    "welcome": EmailTemplate(
        WelcomeData(), {"name": "Ada", "loginUrl": "https://app.example.com/login"}
    ),
    "password_reset": EmailTemplate(
        PasswordResetData(),
        {"name": "Ada", "resetUrl": "https://app.example.com/reset/abc123", "expiresInMinutes": 30},
    ),
    "order_confirmed": EmailTemplate(
        OrderConfirmedData(),
        {
            "name": "Ada",
            "orderId": "A-1042",
            "items": [
                {"name": "Notebook", "quantity": 2, "unitPrice": "4.50"},
                {"name": "Fountain pen", "quantity": 1, "unitPrice": "32.00"},
            ],
            "total": "41.00",
            "currency": "EUR",
            "orderUrl": "https://app.example.com/orders/A-1042",
        },
    ),
    "subscription_ending": EmailTemplate(
        SubscriptionEndingData(),
        {
            "name": "Ada",
            "planName": "Pro",
            "endsOn": "2026-12-31",
            "renewUrl": "https://app.example.com/billing",
        },
    ),
    "daily_digest": EmailTemplate(
        DailyDigestData(),
        {
            "name": "Ada",
            "since": "2026-11-26",
            "until": "2026-11-26",
            "jobs": [
                {
                    "job": "deliver-webhook",
                    "failures": 3,
                    "attempts": 40,
                    "latest": [_SAMPLE_FAILURE],
                },
            ],
        },  # fmt: skip
    ),
    "weekly_report": EmailTemplate(
        WeeklyReportData(),
        {
            "name": "Ada",
            "since": "2026-11-22",
            "until": "2026-11-28",
            "jobs": [
                {
                    "job": "send-email",
                    "total": 1200,
                    "failures": 6,
                    "failureRate": 0.005,
                    "p50Ms": 84.0,
                    "p95Ms": 412.5,
                },
                {
                    "job": "process-image",
                    "total": 0,
                    "failures": 0,
                    "failureRate": 0.0,
                    "p50Ms": None,
                    "p95Ms": None,
                },
            ],
        },  # fmt: skip
    ),
}


# A display name may not hold "<>\\ (no nested address), "@" (no address to pose as) or
# control and line-separator characters; unquoted, not "," or ";" (no second recipient).
_NAME_CHARS = r'"\\<>@\x00-\x1f\x7f-\x9f\u2028\u2029'
_RECIPIENT = re.compile(
    r'(?P<bare>[^\s<>"]+)'
    rf'|(?:"(?P<quoted>[^{_NAME_CHARS}]{{1,100}})"|(?P<plain>[^{_NAME_CHARS},;]{{1,100}}?))?'
    r'\s*<(?P<address>[^\s<>"]+)>'
)
_SPECIALS = set("()[]:;,.")
_check_address = validate.Email()


class Recipient(fields.String):
    """One address, bare or with a display name (``Ada Lovelace <ada@example.com>``).

    The seed hands ``to`` to Resend unchanged, which takes both forms; anything else (a
    list, a second address, a line break, a name posing as an address) is refused. The
    name is quoted when it holds specials, so that it stays one name in the header.
    """

    default_error_messages = {"invalid": "Not a valid email address."}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        match = _RECIPIENT.fullmatch(text) if len(text) <= 400 else None
        if match is None:
            raise self.make_error("invalid")
        address = match["bare"] or match["address"]
        try:
            _check_address(address)
        except ValidationError:
            raise self.make_error("invalid") from None
        name = " ".join((match["quoted"] or match["plain"] or "").split())
        if not name:
            return address
        return f'"{name}" <{address}>' if _SPECIALS & set(name) else f"{name} <{address}>"


class SendEmailSchema(Schema):
    """The send-email payload; ``data`` is checked by the template's own schema."""

    to = Recipient(required=True)
    template = fields.String(required=True, validate=validate.OneOf(sorted(TEMPLATES)))
    data = fields.Dict(keys=fields.String(), load_default=dict)

    @post_load
    def _load_template_data(self, payload: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        try:
            payload["data"] = TEMPLATES[payload["template"]].schema.load(payload["data"])
        except ValidationError as exc:
            raise ValidationError({"data": exc.messages}) from None
        return payload
