"""send-email: a Jinja2 template (subject, HTML, text) rendered from checked data, then sent.

Payload ``{to, template, data}``, as the seed's Next.js publishers send it, checked by
``jobs/email_payload.py`` (``SendEmailSchema``, one data schema per template in
``TEMPLATES``): an unknown template, an invalid address or a mistyped field is a 489 naming
the field, before anything is rendered. Each template under ``templates/email/<name>/`` has
``subject.txt``, ``body.html`` and ``body.txt``; an optional field's section is left out when
the field is absent, and ``appName`` overrides ``EMAIL_APP_NAME`` for one email. HTML
autoescapes the data; an undefined variable or a printed ``None`` is an error, never a blank
or "None". Sending is ``app.mail``'s business (Resend or the local outbox); the QStash
message id makes it idempotent. In debug mode ``GET /dev/emails/<template>?format=html|text``
previews a template with its sample data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, abort, current_app, request, url_for
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    UndefinedError,
    select_autoescape,
)

from app.delivery import Delivery
from app.jobs import job
from app.mail import Message, mail_backend
from jobs.email_payload import MAX_LINES, TEMPLATES, SendEmailSchema

__all__ = ["MAX_LINES", "TEMPLATES", "SendEmailSchema", "render", "send_email"]

if TYPE_CHECKING:
    from flask import Flask

TEMPLATE_ROOT = Path(__file__).parent / "templates" / "email"


def _long_date(value: date) -> str:
    return f"{value:%B} {value.day}, {value.year}"


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def _percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def _duration(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def _printable(value: Any) -> Any:
    """Refuse to print None: an optional field's section must be left out, not say "None"."""
    if value is None:
        raise UndefinedError("a template printed None: guard the optional field with {% if %}")
    return value


environment = Environment(
    loader=FileSystemLoader(TEMPLATE_ROOT),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    finalize=_printable,
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
    """Render the subject, HTML and text parts of ``template`` from loaded ``data``.

    ``app_name`` is the product name unless the data names its own (``appName``).
    """
    context = {**data, "app_name": data.get("app_name") or app_name}
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
    """Choose the mail backend now; mount the template preview, in debug mode only.

    Choosing imports Resend's SDK when it is configured: at start-up, before gunicorn's
    preloading master forks, so that every worker shares it instead of importing its own.
    """
    mail_backend(app)
    if app.debug:
        app.register_blueprint(preview)
