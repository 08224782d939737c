"""send-email through signed deliveries: templates, validation, Resend and the outbox."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import resend
from flask import Flask

from app.mail import PooledHTTPClient
from app.testing import DeliveryClient
from jobs.email import TEMPLATES
from tests.jobs.conftest import make_app
from tests.jobs.recorder import Recorder, Reply, recording_server

ADDRESS = "ada@example.com"


def send(client: DeliveryClient, template: str, data: dict[str, Any], **kwargs: Any) -> Any:
    return client.deliver(
        "send-email", {"to": ADDRESS, "template": template, "data": data}, **kwargs
    )


def outbox(app: Flask) -> Path:
    return Path(app.instance_path) / "outbox"


def read_eml(path: Path) -> email.message.EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def parts(message: email.message.EmailMessage) -> dict[str, str]:
    return {
        part.get_content_type(): part.get_content()
        for part in message.iter_parts()
        if isinstance(part, email.message.EmailMessage)
    }


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_each_template_renders_subject_html_and_text(
    app: Flask, client: DeliveryClient, template: str
) -> None:
    """Every template's sample becomes an .eml with a subject, a text and an HTML part."""
    data = {**TEMPLATES[template].sample, "name": "<script>alert(1)</script>"}
    response = send(client, template, data, message_id="msg_render")
    assert response.status_code == 200, response.get_json()
    message = read_eml(outbox(app) / "msg_render.eml")
    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"].strip()
    assert message["To"] == ADDRESS
    bodies = parts(message)
    assert set(bodies) == {"text/plain", "text/html"}
    assert "<script>" not in bodies["text/html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in bodies["text/html"]
    assert "<script>alert(1)</script>" in bodies["text/plain"]


def test_order_lines_and_total_are_rendered(app: Flask, client: DeliveryClient) -> None:
    """order_confirmed lists each line's amount and the total with two decimals."""
    response = send(client, "order_confirmed", TEMPLATES["order_confirmed"].sample, message_id="o")
    assert response.status_code == 200
    text = parts(read_eml(outbox(app) / "o.eml"))["text/plain"]
    assert "- 2 x Notebook: 9.00 EUR" in text
    assert "Total: 41.00 EUR" in text


def test_subject_is_one_line(app: Flask, client: DeliveryClient) -> None:
    """A newline in data cannot fold or inject headers through the subject."""
    data = {**TEMPLATES["welcome"].sample, "name": "Ada\r\nBcc: victim@example.com"}
    assert send(client, "welcome", data, message_id="s").status_code == 200
    message = read_eml(outbox(app) / "s.eml")
    assert message["Bcc"] is None
    assert "\n" not in message["Subject"]


def test_redelivery_overwrites_the_outbox_file(app: Flask, client: DeliveryClient) -> None:
    """The same message id delivered twice leaves one .eml, named by that id."""
    for _ in range(2):
        sample = TEMPLATES["welcome"].sample
        assert send(client, "welcome", sample, message_id="msg_twice").status_code == 200
    assert [p.name for p in outbox(app).iterdir()] == ["msg_twice.eml"]


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        (
            {"to": ADDRESS, "template": "welcome", "data": {"name": "Ada"}},
            {"data": {"loginUrl": ["Missing data for required field."]}},
        ),
        (
            {"to": ADDRESS, "template": "welcome", "data": {"name": 5, "loginUrl": "x"}},
            {"data": {"name": ["Not a valid string."], "loginUrl": ["Not a valid URL."]}},
        ),
        ({"to": ADDRESS, "template": "nope", "data": {}}, {"template": None}),
        ({"to": "not-an-address", "template": "welcome", "data": {}}, {"to": None}),
        ({"to": "a@example.com\nBcc: b@example.com", "template": "welcome"}, {"to": None}),
        ({"template": "welcome", "data": {}}, {"to": None}),
    ],
    ids=["missing-field", "mistyped-fields", "unknown-template", "bad-address", "crlf", "no-to"],
)
def test_invalid_payloads_are_489_naming_the_field(
    app: Flask, client: DeliveryClient, payload: dict[str, Any], errors: dict[str, Any]
) -> None:
    """Bad payloads are a 489 whose errors name the field, and nothing is written."""
    response = client.deliver("send-email", payload)
    assert response.status_code == 489
    body = response.get_json()["errors"]
    for field, expected in errors.items():
        assert field in body
        if expected is not None:
            assert body[field] == expected
    assert not outbox(app).exists()


def test_undefined_variable_is_an_error_not_a_blank(
    app: Flask, client: DeliveryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A template using a variable its data lacks fails instead of sending a blank."""
    from jobs import email as email_job

    template = email_job.environment.from_string("Hello {{ nickname }}")
    monkeypatch.setattr(email_job.environment, "get_template", lambda name: template)
    response = send(client, "welcome", TEMPLATES["welcome"].sample)
    assert response.status_code == 500
    assert not outbox(app).exists()


# --- Resend, through the real SDK against a local server -----------------------------


@pytest.fixture(autouse=True)
def restore_resend_sdk() -> Iterator[None]:
    """Put the SDK's globals back and close any pooled client a test installed."""
    saved = (resend.api_key, resend.api_url, resend.default_http_client)
    yield
    if isinstance(resend.default_http_client, PooledHTTPClient):
        resend.default_http_client.close()
    resend.api_key, resend.api_url, resend.default_http_client = saved


@pytest.fixture
def resend_server() -> Iterator[Recorder]:
    with recording_server() as fake:
        yield fake


@pytest.fixture
def resend_client(
    resend_server: Recorder, job_config: dict[str, Any], tmp_path: Path
) -> DeliveryClient:
    config = {
        **job_config,
        "RESEND_API_KEY": "re_test_123",
        "RESEND_API_URL": resend_server.url,
        "EMAIL_FROM": "Jobs <jobs@example.com>",
    }
    return DeliveryClient(make_app(config, tmp_path / "instance"))


def test_resend_receives_the_exact_request(
    resend_client: DeliveryClient, resend_server: Recorder
) -> None:
    """The SDK POSTs /emails with the key, the message id as Idempotency-Key, both parts."""
    resend_server.reply(Reply(200, {"id": "email_1"}))
    response = send(resend_client, "welcome", TEMPLATES["welcome"].sample, message_id="msg_42")
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"backend": "resend", "id": "email_1", "to": ADDRESS}
    [request] = resend_server.requests
    assert (request.method, request.path) == ("POST", "/emails")
    assert request.headers["authorization"] == "Bearer re_test_123"
    assert request.headers["idempotency-key"] == "msg_42"
    assert request.headers["user-agent"].startswith("resend-python:")
    body = request.json()
    assert set(body) == {"from", "to", "subject", "html", "text"}
    assert body["from"] == "Jobs <jobs@example.com>"
    assert body["to"] == [ADDRESS]
    assert body["subject"] == "Welcome to QStash Jobs, Ada!"
    assert "https://app.example.com/login" in body["html"]
    assert "https://app.example.com/login" in body["text"]


def test_resend_redelivery_reuses_the_idempotency_key(
    resend_client: DeliveryClient, resend_server: Recorder
) -> None:
    """Two deliveries of one message carry the same Idempotency-Key."""
    for retried in (0, 1):
        sample = TEMPLATES["welcome"].sample
        send(resend_client, "welcome", sample, message_id="msg_same", retried=retried)
    assert [r.headers["idempotency-key"] for r in resend_server.requests] == ["msg_same"] * 2


def test_resend_uses_the_pooled_client(
    resend_client: DeliveryClient, resend_server: Recorder
) -> None:
    """After a send the SDK's default HTTP client is the pooled httpx one."""
    send(resend_client, "welcome", TEMPLATES["welcome"].sample)
    assert isinstance(resend.default_http_client, PooledHTTPClient)


@pytest.mark.parametrize(
    ("reply", "status", "retry_after"),
    [
        (
            Reply(429, {"name": "rate_limit_exceeded", "message": "slow"}, {"Retry-After": "7"}),
            503,
            "7",
        ),
        (Reply(429, {"name": "rate_limit_exceeded", "message": "slow"}), 502, None),
        (Reply(500, {"name": "application_error", "message": "boom"}), 502, None),
        (
            Reply(503, {"name": "internal_server_error", "message": "x"}, {"Retry-After": "30"}),
            503,
            "30",
        ),
        (Reply(422, {"name": "validation_error", "message": "Invalid `to` field"}), 489, None),
        (Reply(403, {"name": "validation_error", "message": "domain not verified"}), 489, None),
        (Reply(403, {"name": "invalid_api_key", "message": "API key is invalid"}), 502, None),
    ],
    ids=["429-retry-after", "429", "500", "503-retry-after", "422", "403-validation", "403-key"],
)
def test_resend_errors_map_to_qstash_outcomes(
    resend_client: DeliveryClient,
    resend_server: Recorder,
    reply: Reply,
    status: int,
    retry_after: str | None,
) -> None:
    """Rate limits and 5xx are retried (at Retry-After if given); validation errors are 489."""
    resend_server.reply(reply)
    response = send(resend_client, "welcome", TEMPLATES["welcome"].sample)
    assert response.status_code == status, response.get_json()
    assert response.headers.get("Retry-After") == retry_after


def test_resend_unreachable_is_retried(job_config: dict[str, Any], tmp_path: Path) -> None:
    """A Resend that cannot be reached is a 502, so QStash retries."""
    with recording_server() as fake:
        url = fake.url  # the port is closed once the block ends
    config = {**job_config, "RESEND_API_KEY": "re_x", "RESEND_API_URL": url}
    client = DeliveryClient(make_app(config, tmp_path / "instance"))
    response = send(client, "welcome", TEMPLATES["welcome"].sample)
    assert response.status_code == 502


# --- preview ---------------------------------------------------------------------------


@pytest.fixture
def debug_app(job_config: dict[str, Any], tmp_path: Path) -> Flask:
    return make_app({**job_config, "DEBUG": True}, tmp_path / "instance")


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_preview_renders_html_and_text_in_debug(debug_app: Flask, template: str) -> None:
    """In debug mode each template previews as HTML and as text from its sample data."""
    client = debug_app.test_client()
    html = client.get(f"/dev/emails/{template}?format=html")
    text = client.get(f"/dev/emails/{template}?format=text")
    assert (html.status_code, html.mimetype) == (200, "text/html")
    assert (text.status_code, text.mimetype) == (200, "text/plain")
    assert "Ada" in html.get_data(as_text=True)
    assert text.get_data(as_text=True).startswith("Subject: ")


def test_preview_rejects_unknown_template_and_format(debug_app: Flask) -> None:
    """Unknown templates are 404 and unknown formats 400."""
    client = debug_app.test_client()
    assert client.get("/dev/emails/nope").status_code == 404
    assert client.get("/dev/emails/welcome?format=pdf").status_code == 400


def test_preview_is_absent_outside_debug(app: Flask) -> None:
    """Without debug mode the preview route does not exist."""
    assert app.test_client().get("/dev/emails/welcome").status_code == 404
