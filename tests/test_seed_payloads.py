"""The seed's own deliveries, byte for byte, through the signed job endpoints.

The seed (the Next.js original this project replaces) publishes with ``publishJSON`` /
``batchJSON`` (the body is ``JSON.stringify(payload)``) and creates three QStash schedules:
``daily-digest`` with ``body: JSON.stringify({ type: "digest" })``, ``weekly-report`` and
``check-expiries`` with no body at all, which QStash delivers as an empty body. Each case
below is one of those publishers or schedules, its body written out as the seed's code
serialises it, delivered signed so that the receiver, the schema and the handler all run.
Emails are read back from the outbox and checked for what a recipient sees.
"""

from __future__ import annotations

import email
import email.policy
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from PIL import Image

from app import create_app
from app.testing import DeliveryClient, StubQueue
from tests.conftest import TEST_CONFIG
from tests.jobs import images
from tests.jobs.recorder import Recorder, recording_server
from tests.ops.conftest import close_store

ADMINS = ["ops@example.com", "grace@example.com"]
#: What a template must never show in place of data it was not given.
PLACEHOLDERS = ("None", "undefined", "null", "{{", "}}")
#: enqueueEmail() adds this header; QStash forwards it to the endpoint.
EMAIL_HEADERS = {"X-Job-Type": "email"}
#: The receiver and QStash's message: a schedule's delivery carries its schedule id.
SCHEDULE_ID = "scd_7YxPcak2rQD51EMjFMuzcW"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    """The real app of discovered jobs, with a delivery log, an outbox and local storage."""
    config = {
        **TEST_CONFIG,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "DELIVERY_LOG": True,
        "DUPLICATE_GUARD": True,
        "ADMIN_EMAILS": ADMINS,
        "EMAIL_OUTBOX": str(tmp_path / "outbox"),
        "STORAGE_ROOT": str(tmp_path / "storage"),
        "RESEND_API_KEY": None,
        "WEBHOOK_ALLOWED_NETWORKS": ["127.0.0.1/32"],
    }
    flask_app = create_app(config)
    flask_app.instance_path = str(tmp_path / "instance")
    yield flask_app
    close_store(flask_app)
    cached = flask_app.extensions.get("qstash_jobs.webhook_client")
    if cached:
        cached[1].close()


@pytest.fixture
def client(app: Flask) -> DeliveryClient:
    return DeliveryClient(app)


@dataclass
class Email:
    """An .eml from the outbox, as its recipient reads it."""

    to: str
    subject: str
    html: str
    text: str

    @classmethod
    def read(cls, path: Path) -> Email:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        html = message.get_body(("html",))
        text = message.get_body(("plain",))
        assert html is not None and text is not None
        return cls(
            to=str(message["To"]),
            subject=str(message["Subject"]),
            html=html.get_content().replace("\r\n", "\n"),
            text=text.get_content().replace("\r\n", "\n"),
        )

    def shows(self, *fragments: str) -> bool:
        """Return whether the subject or either body shows every fragment."""
        seen = f"{self.subject}\n{self.html}\n{self.text}"
        return all(fragment in seen for fragment in fragments)


def outbox(app: Flask) -> Path:
    return Path(app.config["EMAIL_OUTBOX"])


def assert_no_placeholder(mail: Email) -> None:
    for part in (mail.subject, mail.html, mail.text):
        for placeholder in PLACEHOLDERS:
            assert placeholder not in part, (placeholder, part)


# --- send-email: enqueueEmail() / enqueueBatchEmails() ----------------------------------


@dataclass(frozen=True)
class SeedEmail:
    """One seed email: the exact body, and what its recipient must see."""

    body: bytes
    subject: str
    html: tuple[str, ...]
    text: tuple[str, ...]
    absent: tuple[str, ...] = field(default=())


SEED_EMAILS = {
    # The seed's welcome template: `Welcome, ${data.name}!` / `Welcome to ${data.appName}!`.
    "welcome": SeedEmail(
        b'{"to":"ada@example.com","template":"welcome","data":{"name":"Ada","appName":"Acme"}}',
        subject="Welcome to Acme, Ada!",
        html=("Welcome, Ada!", "Your Acme account is ready."),
        text=("Hi Ada,", "Welcome to Acme! Your account is ready."),
        absent=("QStash Jobs", "Sign in"),
    ),
    # The seed's order_confirmed template: `Order #${data.orderId}`, `Total: ${data.total}`.
    "order_confirmed": SeedEmail(
        b'{"to":"ada@example.com","template":"order_confirmed",'
        b'"data":{"orderId":"A1","total":"42.00"}}',
        subject="Order A1 confirmed",
        html=("Thank you!", "Your order <strong>A1</strong> is confirmed.", "42.00"),
        text=("Thank you for your order A1.", "Total: 42.00\n"),
        absent=("USD", "Track your order", "Here is what you bought"),
    ),
    # Record<string, string | number>: the same order with numbers.
    "order_confirmed-numbers": SeedEmail(
        b'{"to":"ada@example.com","template":"order_confirmed",'
        b'"data":{"orderId":1042,"total":42.5}}',
        subject="Order 1042 confirmed",
        html=("<strong>1042</strong>", "42.50"),
        text=("Thank you for your order 1042.", "Total: 42.50\n"),
    ),
    # The other two templates of the seed's union, with as little data as the seed's type
    # allows: the richer fields are optional, their sections are left out.
    "subscription_ending": SeedEmail(
        b'{"to":"ada@example.com","template":"subscription_ending","data":{"name":"Ada"}}',
        subject="Your subscription is ending",
        html=("Hi Ada, your subscription is ending soon.",),
        text=("Hi Ada,", "Your subscription is ending soon."),
        absent=("Renew",),
    ),
    "password_reset": SeedEmail(
        b'{"to":"ada@example.com","template":"password_reset",'
        b'"data":{"resetUrl":"https://acme.example/reset?t=x1"}}',
        subject="Reset your QStash Jobs password",
        html=('href="https://acme.example/reset?t=x1"',),
        text=("Hi,\n", "https://acme.example/reset?t=x1", "60 minutes"),
    ),
}


@pytest.mark.parametrize("case", sorted(SEED_EMAILS))
def test_seed_email_is_sent_as_its_recipient_expects(
    app: Flask, client: DeliveryClient, case: str
) -> None:
    """Each seed email is answered 200 and reads as the seed meant, never "None"."""
    seed = SEED_EMAILS[case]
    response = client.deliver(
        "send-email", body=seed.body, message_id="msg_seed", headers=EMAIL_HEADERS
    )
    assert response.status_code == 200, response.get_json()
    mail = Email.read(outbox(app) / "msg_seed.eml")
    assert mail.to == "ada@example.com"
    assert mail.subject == seed.subject
    for fragment in seed.html:
        assert fragment in mail.html, (fragment, mail.html)
    for fragment in seed.text:
        assert fragment in mail.text, (fragment, mail.text)
    for fragment in seed.absent:
        assert not mail.shows(fragment), fragment
    assert_no_placeholder(mail)


def test_seed_batch_emails_each_render(app: Flask, client: DeliveryClient) -> None:
    """enqueueBatchEmails() publishes one message per payload: every one is sent."""
    for n, case in enumerate(("welcome", "order_confirmed")):
        response = client.deliver("send-email", body=SEED_EMAILS[case].body, message_id=f"b{n}")
        assert response.status_code == 200, response.get_json()
    assert Email.read(outbox(app) / "b0.eml").shows("Welcome to Acme, Ada!")
    assert Email.read(outbox(app) / "b1.eml").shows("Order A1 confirmed")


def test_seed_app_name_overrides_the_configured_one_for_that_email_only(
    app: Flask, client: DeliveryClient
) -> None:
    """``appName`` names the product in its email; the next email is back to EMAIL_APP_NAME."""
    app.config["EMAIL_APP_NAME"] = "Configured"
    client.deliver("send-email", body=SEED_EMAILS["welcome"].body, message_id="with")
    body = b'{"to":"ada@example.com","template":"welcome","data":{"name":"Ada"}}'
    client.deliver("send-email", body=body, message_id="without")
    with_name, without = (Email.read(outbox(app) / f"{m}.eml") for m in ("with", "without"))
    assert with_name.shows("Acme") and not with_name.shows("Configured")
    assert without.shows("Welcome to Configured, Ada!") and not without.shows("Acme")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # The seed's quick reference publishes {userId, template}: nobody to send to.
        (b'{"userId":"u_1","template":"welcome"}', "to"),
        (b'{"to":"not an address","template":"welcome","data":{"name":"Ada"}}', "to"),
        (b'{"to":"ada@example.com","template":"newsletter","data":{}}', "template"),
        (b'{"to":"ada@example.com","template":"password_reset","data":{"name":"Ada"}}', "data"),
    ],
    ids=["no-to", "bad-address", "unknown-template", "reset-without-link"],
)
def test_strictness_stays_where_it_protects(
    app: Flask, client: DeliveryClient, body: bytes, field: str
) -> None:
    """No address, a bad address, an unknown template or a reset email without its link: 489."""
    response = client.deliver("send-email", body=body)
    assert response.status_code == 489
    assert field in response.get_json()["errors"]
    assert not outbox(app).exists()


# --- process-image: enqueueImageProcessing() -------------------------------------------


def _store_photo(app: Flask) -> None:
    source = Path(app.config["STORAGE_ROOT"]) / "uploads" / "42" / "photo.jpg"
    source.parent.mkdir(parents=True)
    source.write_bytes(images.encode(images.two_tone((1600, 1200)), "JPEG"))


def _outputs(app: Flask, response: Any) -> dict[str, tuple[str, tuple[int, int]]]:
    """Return {operation: (format, size)} of the stored outputs, read back from storage."""
    root = Path(app.config["STORAGE_ROOT"])
    result = {}
    for output in response.get_json()["outputs"]:
        assert output["key"].startswith("uploads/42/photo.")
        image = Image.open(io.BytesIO((root / output["key"]).read_bytes()))
        result[output["operation"]] = (str(image.format), image.size)
    return result


def test_seed_image_with_target_width(app: Flask, client: DeliveryClient) -> None:
    """The seed's image payload with targetWidth stores the resized WebP and the thumbnail."""
    _store_photo(app)
    body = (
        b'{"fileKey":"uploads/42/photo.jpg","userId":"user_42",'
        b'"operations":["resize","webp","thumbnail"],"targetWidth":800}'
    )
    response = client.deliver("process-image", body=body)
    assert response.status_code == 200, response.get_json()
    assert _outputs(app, response) == {
        "resize": ("WEBP", (800, 600)),
        "thumbnail": ("WEBP", (256, 256)),
    }


def test_seed_image_without_target_width(app: Flask, client: DeliveryClient) -> None:
    """targetWidth is optional in the seed: resize falls back to a 1024 px wide WebP."""
    _store_photo(app)
    body = (
        b'{"fileKey":"uploads/42/photo.jpg","userId":"user_42",'
        b'"operations":["resize","webp","thumbnail"]}'
    )
    response = client.deliver("process-image", body=body)
    assert response.status_code == 200, response.get_json()
    assert _outputs(app, response) == {
        "resize": ("WEBP", (1024, 768)),
        "thumbnail": ("WEBP", (256, 256)),
    }


# --- deliver-webhook: enqueueWebhookDelivery() -----------------------------------------


@pytest.fixture
def receiver() -> Iterator[Recorder]:
    with recording_server() as recorder:
        yield recorder


def _webhook_body(target: str, payload: bytes | None) -> bytes:
    fields = b'{"webhookId":"wh_1","eventType":"invoice.paid",'
    if payload is not None:
        fields += b'"payload":' + payload + b","
    return fields + b'"targetUrl":"' + target.encode() + b'","secret":"s3cr3t-from-the-db"}'


def test_seed_webhook_reaches_its_target(client: DeliveryClient, receiver: Recorder) -> None:
    """The seed's webhook payload (a raw-string secret) is posted, signed, to the target."""
    body = _webhook_body(receiver.url + "/hooks", b'{"invoiceId":"in_1","amount":4200}')
    response = client.deliver("deliver-webhook", body=body, message_id="msg_hook")
    assert response.status_code == 200, response.get_json()
    [request] = receiver.requests
    assert request.path == "/hooks"
    assert request.json()["data"] == {"invoiceId": "in_1", "amount": 4200}
    assert request.headers["webhook-id"] == "msg_hook"
    assert request.headers["webhook-signature"].startswith("v1,")


def test_seed_webhook_without_payload(client: DeliveryClient, receiver: Recorder) -> None:
    """A webhook whose payload was ``undefined`` is sent with ``"data": null``."""
    body = _webhook_body(receiver.url + "/hooks", None)
    response = client.deliver("deliver-webhook", body=body)
    assert response.status_code == 200, response.get_json()
    assert receiver.requests[0].json()["data"] is None


# --- the schedules: setupCronJobs() -----------------------------------------------------

SCHEDULES = [
    pytest.param("daily-digest", b'{"type":"digest"}', id="daily-digest"),
    # The seed's quick reference: schedules.create({..., body: {}}), sent as "{}".
    pytest.param("daily-digest", b"{}", id="daily-digest-quick-reference"),
    # No body in the seed's schedules.create(): QStash delivers an empty body.
    pytest.param("weekly-report", b"", id="weekly-report"),
]


@pytest.mark.parametrize(("job", "body"), SCHEDULES)
def test_seed_schedule_mails_the_admins(
    app: Flask, client: DeliveryClient, job: str, body: bytes
) -> None:
    """A seed schedule's firing runs its report and every admin receives a rendered email."""
    queue = StubQueue.install(app)
    response = client.deliver(job, body=body, schedule_id=SCHEDULE_ID)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["sent"] == len(ADMINS)
    queue.drain(fail_fast=True)
    mails = [Email.read(path) for path in sorted(outbox(app).glob("*.eml"))]
    assert sorted(mail.to for mail in mails) == sorted(ADMINS)
    for mail in mails:
        assert mail.subject.startswith("[QStash Jobs] ")
        assert mail.shows(f"Hi {mail.to.partition('@')[0]},")
        assert_no_placeholder(mail)


def test_seed_check_expiries_schedule_runs(client: DeliveryClient) -> None:
    """check-expiries, scheduled without a body, runs and reports what it expired."""
    response = client.deliver("check-expiries", body=b"", schedule_id=SCHEDULE_ID)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"rows": 0, "claims": 0, "files": 0, "runs": 0}
