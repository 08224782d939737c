"""send-email through signed deliveries: templates, validation, Resend and the outbox."""

from __future__ import annotations

import email
import email.policy
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import resend
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from app.mail import PooledHTTPClient
from app.testing import DeliveryClient
from jobs.email import TEMPLATES
from jobs.email_payload import MAX_LINES, SendEmailSchema
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
            {"to": ADDRESS, "template": "password_reset", "data": {"name": "Ada"}},
            {"data": {"resetUrl": ["Missing data for required field."]}},
        ),
        (
            {"to": ADDRESS, "template": "order_confirmed", "data": {"orderId": "A1"}},
            {"data": {"total": ["Missing data for required field."]}},
        ),
        (
            {"to": ADDRESS, "template": "welcome", "data": {"name": True, "loginUrl": "x"}},
            {"data": {"name": ["Not a valid string."], "loginUrl": ["Not a valid URL."]}},
        ),
        (
            {"to": ADDRESS, "template": "welcome", "data": {"name": {"first": "Ada"}}},
            {"data": {"name": ["Not a valid string."]}},
        ),
        (
            {"to": ADDRESS, "template": "welcome", "data": {"name": "A" * 201}},
            {"data": {"name": ["Longer than maximum length 200."]}},
        ),
        (
            {"to": ADDRESS, "template": "order_confirmed", "data": {"orderId": " ", "total": 1}},
            {"data": {"orderId": ["May not be blank."]}},
        ),
        (
            {"to": ADDRESS, "template": "order_confirmed", "data": {"orderId": "A", "total": "$4"}},
            {"data": {"total": ["Not a valid number."]}},
        ),
        (
            {
                "to": ADDRESS,
                "template": "order_confirmed",
                "data": {"orderId": "A", "total": 1, "currency": "usd"},
            },
            {"data": {"currency": ["String does not match expected pattern."]}},
        ),  # fmt: skip
        ({"to": ADDRESS, "template": "nope", "data": {}}, {"template": None}),
        ({"to": "not-an-address", "template": "welcome", "data": {}}, {"to": None}),
        ({"to": "a@example.com\nBcc: b@example.com", "template": "welcome"}, {"to": None}),
        ({"template": "welcome", "data": {}}, {"to": None}),
    ],
    ids=[
        "missing-reset-link",
        "missing-total",
        "mistyped-fields",
        "object-as-text",
        "too-long",
        "blank-required",
        "not-a-number",
        "bad-currency",
        "unknown-template",
        "bad-address",
        "crlf",
        "no-to",
    ],
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


def test_printing_none_is_an_error_not_none(
    app: Flask, client: DeliveryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A template printing an absent optional field fails instead of sending "None"."""
    from jobs import email as email_job

    template = email_job.environment.from_string("Hello {{ name }}")
    monkeypatch.setattr(email_job.environment, "get_template", lambda name: template)
    response = send(client, "welcome", {})
    assert response.status_code == 500
    assert not outbox(app).exists()


#: Each template's data with only what it requires: every optional section is left out.
MINIMAL_DATA: dict[str, dict[str, Any]] = {
    "welcome": {},
    "password_reset": {"resetUrl": "https://app.example.com/reset/abc"},
    "order_confirmed": {"orderId": "A1", "total": "42.00"},
    "subscription_ending": {},
    "daily_digest": {"since": "2026-11-26", "until": "2026-11-26", "jobs": []},
    "weekly_report": {"since": "2026-11-22", "until": "2026-11-28", "jobs": []},
}
#: What an optional field adds, absent from the minimal emails.
OPTIONAL_SECTIONS = ("Sign in", "Track your order", "Renew", "USD", "Here is what you bought")


def delivered(app: Flask, message_id: str) -> tuple[str, str, str]:
    """Return the (subject, HTML, text) of the outbox email ``message_id``."""
    message = read_eml(outbox(app) / f"{message_id}.eml")
    bodies = parts(message)
    text = bodies["text/plain"].replace("\r\n", "\n")
    return str(message["Subject"]), bodies["text/html"], text


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_required_data_alone_renders_without_optional_sections(
    app: Flask, client: DeliveryClient, template: str
) -> None:
    """Without the optional fields the email is sent, greets "Hi," and never says "None"."""
    assert set(MINIMAL_DATA) == set(TEMPLATES)
    response = send(client, template, MINIMAL_DATA[template], message_id="m")
    assert response.status_code == 200, response.get_json()
    subject, html, text = delivered(app, "m")
    assert text.startswith("Hi,\n")
    for part in (subject, html, text):
        assert "None" not in part
        for section in OPTIONAL_SECTIONS:
            assert section not in part


@pytest.mark.parametrize(
    ("order_id", "shown"),
    [(1042, "1042"), (10.0, "10"), (1.5, "1.5"), (-7, "-7"), ("A-1", "A-1")],
)
def test_a_number_stands_for_its_text(
    app: Flask, client: DeliveryClient, order_id: Any, shown: str
) -> None:
    """The seed's data is string | number: a number is shown as JavaScript writes it."""
    data = {"orderId": order_id, "total": 42, "name": 7}
    assert send(client, "order_confirmed", data, message_id="n").status_code == 200
    subject, _, text = delivered(app, "n")
    assert subject == f"Order {shown} confirmed"
    assert text.startswith("Hi 7,\n")
    assert "Total: 42.00\n" in text


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"orderId": "A", "total": "1e999999"}, "total"),
        ({"orderId": "A", "total": "NaN"}, "total"),
        ({"orderId": "A", "total": "-Infinity"}, "total"),
        ({"orderId": "A", "total": -1}, "total"),
    ],
)
def test_absurd_totals_are_489(
    app: Flask, client: DeliveryClient, data: dict[str, Any], field: str
) -> None:
    """A total that is no finite, non-negative amount is refused, naming it."""
    response = send(client, "order_confirmed", data)
    assert response.status_code == 489
    assert field in response.get_json()["errors"]["data"]
    assert not outbox(app).exists()


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("field", ["orderId", "name", "appName"])
def test_non_finite_numbers_are_not_text(number: float, field: str) -> None:
    """NaN and infinities (Python's json reads them; a Job.enqueue may pass them) are no text."""
    data = {"orderId": "A", "total": 1, field: number}
    with pytest.raises(ValidationError) as caught:
        SendEmailSchema().load({"to": ADDRESS, "template": "order_confirmed", "data": data})
    assert caught.value.messages == {"data": {field: ["Not a valid string."]}}


def test_app_name_in_the_data_overrides_the_config_and_is_escaped(
    app: Flask, client: DeliveryClient
) -> None:
    """``appName`` replaces EMAIL_APP_NAME in that email, autoescaped in the HTML part."""
    data = {"name": "Ada", "appName": "<b>Acme</b>"}
    assert send(client, "welcome", data, message_id="a").status_code == 200
    subject, html, text = delivered(app, "a")
    assert subject == "Welcome to <b>Acme</b>, Ada!"
    assert "Your &lt;b&gt;Acme&lt;/b&gt; account is ready." in html
    assert "<b>Acme" not in html
    assert "Welcome to <b>Acme</b>! Your account is ready." in text
    assert "QStash Jobs" not in subject + html + text


# --- the seed's flat data, generated -----------------------------------------------------

_WORD = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40
)
#: Text a recipient can be shown: non-blank, without "None" (so its absence is checkable).
_SHOWN = _WORD.map(str.strip).filter(lambda t: bool(t) and "None" not in t)
_NUMBER = st.integers(-(10**15), 10**15) | st.floats(
    allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15
)
_URL = st.builds(
    "https://{}.example.com/{}?t={}".format,
    st.from_regex(r"[a-z]([a-z0-9-]{0,18}[a-z0-9])?", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9._~-]{0,20}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9]{0,20}", fullmatch=True),
)
_TEXT = _SHOWN | _NUMBER
_AMOUNT = (
    st.decimals(min_value=0, max_value=10**9, places=2).map(str)
    | st.integers(0, 10**9)
    | st.floats(min_value=0, max_value=1e9)
)
_ITEM = st.fixed_dictionaries(
    {"name": _SHOWN, "quantity": st.integers(1, 1000), "unitPrice": _AMOUNT}
)
_COMMON = {"name": _TEXT, "appName": _TEXT}
#: For each template a publisher may send: valid data, required and optional fields.
VALID_DATA: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "welcome": st.fixed_dictionaries({}, optional={**_COMMON, "loginUrl": _URL}),
    "password_reset": st.fixed_dictionaries(
        {"resetUrl": _URL},
        optional={**_COMMON, "expiresInMinutes": st.integers(1, 10080) | st.just("30")},
    ),
    "order_confirmed": st.fixed_dictionaries(
        {"orderId": _TEXT, "total": _AMOUNT},
        optional={
            **_COMMON,
            "items": st.lists(_ITEM, max_size=4),
            "currency": st.from_regex(r"[A-Z]{3}", fullmatch=True),
            "orderUrl": _URL,
        },
    ),
    "subscription_ending": st.fixed_dictionaries(
        {},
        optional={
            **_COMMON,
            "planName": _TEXT,
            "endsOn": st.dates().map(lambda day: day.isoformat()),
            "renewUrl": _URL,
        },
    ),
}
#: The seed's Record<string, string | number>, any keys (its templates' and others).
FLAT_RECORD = st.dictionaries(
    st.sampled_from(
        ["name", "appName", "loginUrl", "resetUrl", "orderId", "total", "currency", "planName",
         "endsOn", "renewUrl", "expiresInMinutes", "orderUrl", "items", "userId"]
    ) | st.text(max_size=10),
    # JSON.stringify writes NaN and the infinities as null.
    st.text(max_size=40) | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.none(),
    max_size=8,
)  # fmt: skip


def _js_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@pytest.mark.parametrize("template", sorted(VALID_DATA))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_valid_seed_data_always_renders(
    app: Flask, client: DeliveryClient, template: str, data: st.DataObject
) -> None:
    """Any valid mix of required and optional fields is sent, greets by name, never "None"."""
    values: dict[str, Any] = data.draw(VALID_DATA[template])
    response = send(client, template, values, message_id="v")
    assert response.status_code == 200, (values, response.get_json())
    subject, html, text = delivered(app, "v")
    for part in (subject, html, text):
        assert "None" not in part
    greeting = f"Hi {_js_text(values['name'])}," if "name" in values else "Hi,"
    assert text.startswith(greeting + "\n")
    if template in ("welcome", "password_reset"):  # the two that name the product
        assert _js_text(values.get("appName", app.config["EMAIL_APP_NAME"])) in text


@pytest.mark.parametrize("template", sorted(TEMPLATES))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(record=FLAT_RECORD)
def test_any_flat_record_is_sent_or_refused_never_a_crash(
    app: Flask, client: DeliveryClient, template: str, record: dict[str, Any]
) -> None:
    """Whatever flat string/number data arrives, the answer is 200 or a 489 naming data."""
    response = client.deliver("send-email", body=encode_record(template, record), message_id="f")
    assert response.status_code in (200, 489), (record, response.get_json())
    if response.status_code == 489:
        assert set(response.get_json()["errors"]) == {"data"}


def encode_record(template: str, record: dict[str, Any]) -> bytes:
    """Serialise the payload as publishJSON() would (JSON.stringify)."""
    return json.dumps({"to": ADDRESS, "template": template, "data": record}).encode()


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


# --- recipients: an address, or a display name and an address -------------------------


@pytest.mark.parametrize(
    ("to", "header", "address"),
    [
        ("Ada Lovelace <ada@example.com>", "Ada Lovelace <ada@example.com>", "ada@example.com"),
        ('"Lovelace, Ada" <ada@example.com>', '"Lovelace, Ada" <ada@example.com>', None),
        ("Ada.L <ada@example.com>", '"Ada.L" <ada@example.com>', None),
        ("  Ådä   Øster <ada@example.com> ", "Ådä Øster <ada@example.com>", None),
        ("<ada@example.com>", "ada@example.com", None),
    ],
)
def test_a_named_recipient_is_one_address(
    app: Flask, client: DeliveryClient, to: str, header: str, address: str | None
) -> None:
    """``Name <address>``, as Resend takes it, is sent to that one address under that name."""
    payload = {"to": to, "template": "welcome", "data": {}}
    response = client.deliver("send-email", payload, message_id="r")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["to"] == header
    message = read_eml(outbox(app) / "r.eml")
    [parsed] = message["To"].addresses
    assert parsed.addr_spec == "ada@example.com"
    assert str(parsed) == header


def test_resend_receives_the_named_recipient(
    resend_client: DeliveryClient, resend_server: Recorder
) -> None:
    """The display name reaches Resend in its own ``Name <address>`` form."""
    resend_server.reply(Reply(200, {"id": "email_2"}))
    payload = {"to": "Lovelace, Ada <ada@example.com>", "template": "welcome"}
    assert resend_client.deliver("send-email", payload).status_code == 489
    payload["to"] = '"Lovelace, Ada" <ada@example.com>'
    assert resend_client.deliver("send-email", payload).status_code == 200
    assert resend_server.requests[0].json()["to"] == ['"Lovelace, Ada" <ada@example.com>']


@pytest.mark.parametrize(
    "to",
    [
        "Ada <a@example.com>, Bob <b@example.com>",
        "a@example.com, b@example.com",
        "a@example.com,b@example.com",
        "Lovelace, Ada <ada@example.com>",
        "Ada; Bob <b@example.com>",
        "support@bank.example <evil@example.com>",
        '"support@bank.example" <evil@example.com>',
        "Ada\r\nBcc: eve@example.com <a@example.com>",
        "Ada <a@example.com>\r\nBcc: eve@example.com",
        "Ada\u2028Bcc <a@example.com>",
        '"A\\"B" <a@example.com>',
        "Ada <a@example.com",
        "Ada <a@example.com>>",
        "Ada <<a@example.com>>",
        "Ada <not-an-address>",
        "Ada <>",
        '"" <>',
        "A" * 101 + " <a@example.com>",
        "a" * 400 + "@example.com",
        "",
    ],
)
def test_a_recipient_that_is_not_exactly_one_address_is_489(
    app: Flask, client: DeliveryClient, to: str
) -> None:
    """Lists, line breaks, a name posing as an address or a broken bracket: 489 on ``to``."""
    response = client.deliver("send-email", {"to": to, "template": "welcome"})
    assert response.status_code == 489
    assert response.get_json()["errors"] == {"to": ["Not a valid email address."]}
    assert not outbox(app).exists()


_HOSTILE_NAME = st.text(
    st.sampled_from('\r\n\t\x00\x85\u2028,;:<>"\\@()[]. aZé') | st.characters(codec="utf-8"),
    max_size=30,
)
_HOSTILE_TO = st.builds(
    "{}{}<{}>{}".format,
    _HOSTILE_NAME | st.builds('"{}" '.format, _HOSTILE_NAME),
    st.sampled_from(["", " "]),
    st.sampled_from(["ada@example.com", "ada@example.com>, <eve@example.com", "eve"]),
    st.sampled_from(["", " ", ", eve@example.com", "\r\nBcc: eve@example.com"]),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(to=_HOSTILE_TO)
def test_any_accepted_recipient_is_exactly_one_address(
    app: Flask, client: DeliveryClient, to: str
) -> None:
    """Whatever the name, an accepted ``to`` parses back to ada@example.com alone."""
    response = client.deliver("send-email", {"to": to, "template": "welcome"}, message_id="h")
    assert response.status_code in (200, 489), response.get_json()
    if response.status_code == 489:
        assert set(response.get_json()["errors"]) == {"to"}
        return
    message = read_eml(outbox(app) / "h.eml")
    assert [a.addr_spec for a in message["To"].addresses] == ["ada@example.com"]
    assert message["Bcc"] is None and message["Cc"] is None
    name = message["To"].addresses[0].display_name
    assert "@" not in name and "\n" not in name and "\r" not in name


# --- bounds ------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "status"), [(MAX_LINES, 200), (MAX_LINES + 1, 489)])
def test_an_order_lists_at_most_max_lines_items(
    app: Flask, client: DeliveryClient, count: int, status: int
) -> None:
    """Up to MAX_LINES order lines are listed; more is a 489 naming ``items``."""
    item = {"name": "Notebook", "quantity": 1, "unitPrice": "1.00"}
    data = {"orderId": "A1", "total": count, "items": [item] * count}
    response = send(client, "order_confirmed", data, message_id="lines")
    assert response.status_code == status
    if status == 489:
        errors = response.get_json()["errors"]
        assert errors == {"data": {"items": [f"Longer than maximum length {MAX_LINES}."]}}
        assert not outbox(app).exists()
    else:
        assert delivered(app, "lines")[2].count("- 1 x Notebook: 1.00") == MAX_LINES


@pytest.mark.parametrize("template", ["daily_digest", "weekly_report"])
def test_a_report_lists_at_most_max_lines_jobs(client: DeliveryClient, template: str) -> None:
    """A report published with more than MAX_LINES jobs is refused before it renders."""
    data = {**TEMPLATES[template].sample}
    data["jobs"] = [data["jobs"][0]] * (MAX_LINES + 1)
    response = send(client, template, data)
    assert response.status_code == 489
    assert set(response.get_json()["errors"]["data"]) == {"jobs"}


def test_a_digest_lists_at_most_max_lines_failures_per_job(client: DeliveryClient) -> None:
    """The latest failures of one job are capped too."""
    data = {**TEMPLATES["daily_digest"].sample}
    entry = data["jobs"][0]
    data["jobs"] = [{**entry, "latest": entry["latest"] * (MAX_LINES + 1)}]
    response = send(client, "daily_digest", data)
    assert response.status_code == 489
    assert response.get_json()["errors"]["data"]["jobs"]["0"] == {
        "latest": [f"Longer than maximum length {MAX_LINES}."]
    }
