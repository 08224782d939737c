"""send-email: a Jinja2 template (subject, HTML, text) rendered from checked data, then sent.

Payload ``{to, template, data}``. Each template under ``templates/email/<name>/`` has
``subject.txt``, ``body.html`` and ``body.txt``, and declares the data it needs with a
marshmallow schema (``TEMPLATES`` below): an unknown template, an invalid address or a
missing/mistyped data field is a 489 naming the field, before anything is rendered. HTML
autoescapes the data; an undefined variable is an error, never a blank. Sending is
``app.mail``'s business (Resend or the local outbox); the QStash message id makes it
idempotent. In debug mode ``GET /dev/emails/<template>?format=html|text`` previews a
template with its sample data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, abort, current_app, request, url_for
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

from app.jobs import job
from app.mail import Message, mail_backend
from app.qstash.receiver import Delivery

if TYPE_CHECKING:
    from flask import Flask

TEMPLATE_ROOT = Path(__file__).parent / "templates" / "email"
_NAME = fields.String(required=True, validate=validate.Length(min=1, max=200))
_HTTP = {"http", "https"}


class TemplateData(Schema):
    """Base of the per-template data schemas: extra fields are ignored."""

    class Meta:
        unknown = EXCLUDE

    name = _NAME


class WelcomeData(TemplateData):
    login_url = fields.Url(required=True, data_key="loginUrl", schemes=_HTTP)


class PasswordResetData(TemplateData):
    reset_url = fields.Url(required=True, data_key="resetUrl", schemes=_HTTP)
    expires_in_minutes = fields.Integer(
        data_key="expiresInMinutes", load_default=60, validate=validate.Range(min=1, max=10080)
    )


class OrderItem(Schema):
    name = _NAME
    quantity = fields.Integer(required=True, validate=validate.Range(min=1))
    unit_price = fields.Decimal(
        required=True, data_key="unitPrice", places=2, validate=validate.Range(min=0)
    )


class OrderConfirmedData(TemplateData):
    order_id = fields.String(required=True, data_key="orderId", validate=validate.Length(1, 100))
    items = fields.List(fields.Nested(OrderItem), required=True, validate=validate.Length(min=1))
    total = fields.Decimal(required=True, places=2, validate=validate.Range(min=0))
    currency = fields.String(load_default="USD", validate=validate.Regexp(r"^[A-Z]{3}$"))
    order_url = fields.Url(data_key="orderUrl", load_default=None, schemes=_HTTP)


class SubscriptionEndingData(TemplateData):
    plan_name = fields.String(required=True, data_key="planName", validate=validate.Length(1, 100))
    ends_on = fields.Date(required=True, data_key="endsOn")
    renew_url = fields.Url(required=True, data_key="renewUrl", schemes=_HTTP)


class FailureItem(Schema):
    at = fields.AwareDateTime(required=True)
    message_id = fields.String(data_key="messageId", load_default=None, allow_none=True)
    attempt = fields.Integer(required=True, validate=validate.Range(min=1))
    status = fields.Integer(required=True)
    error = fields.String(load_default=None, allow_none=True)
    dlq_id = fields.String(data_key="dlqId", load_default=None, allow_none=True)


class JobFailures(Schema):
    job = _NAME
    failures = fields.Integer(required=True, validate=validate.Range(min=0))
    attempts = fields.Integer(required=True, validate=validate.Range(min=0))
    latest = fields.List(fields.Nested(FailureItem), load_default=list)


class DailyDigestData(TemplateData):
    """The daily-digest data (jobs/cron.py): failed attempts by job over [since, until]."""

    since = fields.Date(required=True)
    until = fields.Date(required=True)
    jobs = fields.List(fields.Nested(JobFailures), required=True)


class JobWeek(Schema):
    job = _NAME
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
    jobs = fields.List(fields.Nested(JobWeek), required=True)


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


class SendEmailSchema(Schema):
    """The send-email payload; ``data`` is checked by the template's own schema."""

    to = fields.Email(required=True)
    template = fields.String(required=True, validate=validate.OneOf(sorted(TEMPLATES)))
    data = fields.Dict(keys=fields.String(), load_default=dict)

    @post_load
    def _load_template_data(self, payload: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        try:
            payload["data"] = TEMPLATES[payload["template"]].schema.load(payload["data"])
        except ValidationError as exc:
            raise ValidationError({"data": exc.messages}) from None
        return payload


def _long_date(value: date) -> str:
    return f"{value:%B} {value.day}, {value.year}"


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def _percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def _duration(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


environment = Environment(
    loader=FileSystemLoader(TEMPLATE_ROOT),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)
environment.filters.update(long_date=_long_date, money=_money, percent=_percent, duration=_duration)


@dataclass(frozen=True)
class Rendered:
    """The three parts of a rendered email."""

    subject: str
    html: str
    text: str


def render(template: str, data: dict[str, Any], *, app_name: str) -> Rendered:
    """Render the subject, HTML and text parts of ``template`` from loaded ``data``."""
    context = {**data, "app_name": app_name}
    subject = environment.get_template(f"{template}/subject.txt").render(context)
    return Rendered(
        subject=" ".join(subject.split()),  # one line: no header folding or injection
        html=environment.get_template(f"{template}/body.html").render(context),
        text=environment.get_template(f"{template}/body.txt").render(context),
    )


@job("send-email", schema=SendEmailSchema, retries=3)
def send_email(payload: dict[str, Any], delivery: Delivery) -> dict[str, Any]:
    """Render a templated email and send it through Resend (or the local outbox)."""
    config = current_app.config
    rendered = render(payload["template"], payload["data"], app_name=config["EMAIL_APP_NAME"])
    message = Message(
        sender=config["EMAIL_FROM"],
        to=payload["to"],
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        message_id=delivery.message_id,
    )
    sent = mail_backend(current_app).send(message)
    return {"backend": sent.backend, "id": sent.id, "to": payload["to"]}


preview = Blueprint("email_preview", __name__, url_prefix="/dev/emails")


@preview.get("/")
def preview_index() -> dict[str, Any]:
    """List the templates with links to their previews."""
    return {
        name: {
            fmt: url_for(".preview_template", template=name, format=fmt) for fmt in ("html", "text")
        }
        for name in sorted(TEMPLATES)
    }


@preview.get("/<template>")
def preview_template(template: str) -> Response:
    """Render ``template`` with its sample data as HTML or plain text."""
    if template not in TEMPLATES:
        abort(404, f"no email template named {template!r}; known: {', '.join(sorted(TEMPLATES))}")
    fmt = request.args.get("format", "html")
    if fmt not in ("html", "text"):
        abort(400, "format must be html or text")
    entry = TEMPLATES[template]
    rendered = render(
        template, entry.schema.load(entry.sample), app_name=current_app.config["EMAIL_APP_NAME"]
    )
    if fmt == "text":
        body = f"Subject: {rendered.subject}\n\n{rendered.text}"
        return Response(body, mimetype="text/plain")
    return Response(rendered.html, mimetype="text/html")


def init_app(app: Flask) -> None:
    """Mount the template preview, in debug mode only."""
    if app.debug:
        app.register_blueprint(preview)
