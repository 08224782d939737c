"""The job modules under gunicorn (preloaded app, forked workers), called like QStash calls."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from standardwebhooks import Webhook

from app.qstash.signature import sign
from app.testing import encode_payload
from tests.conftest import CURRENT_KEY, NEXT_KEY
from tests.jobs import images
from tests.jobs.recorder import Recorder, recording_server
from tests.jobs.test_webhook import SECRET
from tests.servers import Server, free_port, gunicorn

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """Run wsgi:app under gunicorn with two workers and the job folders in a temp dir."""
    root = tmp_path_factory.mktemp("e2e")
    port = free_port()
    env = {
        "QSTASH_CURRENT_SIGNING_KEY": CURRENT_KEY,
        "QSTASH_NEXT_SIGNING_KEY": NEXT_KEY,
        "APP_URL": f"http://127.0.0.1:{port}",
        "STORAGE_ROOT": str(root / "storage"),
        "EMAIL_OUTBOX": str(root / "outbox"),
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
    }
    with gunicorn(root, env, workers=2, port=port) as server:
        yield server, root


def deliver(server: Server, job: str, payload: Any, message_id: str) -> httpx.Response:
    body = encode_payload(payload)
    url = f"{server.url}/api/jobs/{job}"
    headers = {
        "Content-Type": "application/json",
        "Upstash-Signature": sign(body, url=url, key=CURRENT_KEY),
        "Upstash-Message-Id": message_id,
        "Upstash-Retried": "0",
    }
    return httpx.post(url, content=body, headers=headers, timeout=30)


@pytest.fixture
def receiver() -> Iterator[Recorder]:
    with recording_server() as recorder:
        yield recorder


def test_webhooks_are_delivered_from_every_worker(
    served: tuple[Server, Path], receiver: Recorder
) -> None:
    """Signed deliveries through forked workers all reach the receiver and verify."""
    server, _ = served
    for i in range(8):
        payload = {
            "webhookId": f"wh_{i}",
            "eventType": "user.created",
            "payload": {"i": i},
            "targetUrl": receiver.url + "/hook",
            "secret": SECRET,
        }
        response = deliver(server, "deliver-webhook", payload, f"msg_e2e_{i}")
        assert response.status_code == 200, (response.text, server.output())
    assert len(receiver.requests) == 8
    for request in receiver.requests:
        Webhook(SECRET).verify(request.body, request.headers)


def test_email_lands_in_the_outbox(served: tuple[Server, Path]) -> None:
    """send-email without RESEND_API_KEY writes the .eml named by the message id."""
    server, root = served
    payload = {
        "to": "ada@example.com",
        "template": "password_reset",
        "data": {"name": "Ada", "resetUrl": "https://app.example.com/reset/x"},
    }
    response = deliver(server, "send-email", payload, "msg_e2e_mail")
    assert response.status_code == 200, response.text
    assert (root / "outbox" / "msg_e2e_mail.eml").is_file()


def test_image_is_processed(served: tuple[Server, Path]) -> None:
    """process-image reads and writes the configured storage folder."""
    server, root = served
    source = root / "storage" / "e2e" / "p.jpg"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(images.encode(images.two_tone((1600, 1200)), "JPEG"))
    payload = {"fileKey": "e2e/p.jpg", "userId": "u", "operations": ["thumbnail", "webp"]}
    response = deliver(server, "process-image", payload, "msg_e2e_img")
    assert response.status_code == 200, response.text
    thumb = root / "storage" / "e2e" / "p.jpg.thumb256.webp"
    assert Image.open(io.BytesIO(thumb.read_bytes())).size == (256, 256)
