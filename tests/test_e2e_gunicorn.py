"""End to end: the real app under gunicorn on 127.0.0.1, signed deliveries over sockets."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.qstash.signature import sign
from tests.conftest import CURRENT_KEY, NEXT_KEY
from tests.servers import GUNICORN, ROOT, Server, free_port, gunicorn

pytestmark = pytest.mark.e2e

APP_URL = "https://public.example.com"
ENV = {
    "QSTASH_CURRENT_SIGNING_KEY": CURRENT_KEY,
    "QSTASH_NEXT_SIGNING_KEY": NEXT_KEY,
    "APP_URL": APP_URL,
    "JOBS_PACKAGES": "tests.e2e_jobs",
    "QSTASH_MAX_BODY_SIZE": "4096",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with gunicorn(tmp_path_factory.mktemp("gunicorn"), ENV, workers=2) as running:
        yield running


def deliver(server: Server, job: str, body: bytes, **headers: str) -> httpx.Response:
    token = sign(body, url=f"{APP_URL}/api/jobs/{job}", key=CURRENT_KEY)
    sent = {"Upstash-Signature": token, "Upstash-Message-Id": "msg_e2e", **headers}
    return httpx.post(f"{server.url}/api/jobs/{job}", content=body, headers=sent, timeout=10)


def test_signed_delivery_runs_the_job(server: Server) -> None:
    """A signed delivery over a real socket answers 200 with the handler's JSON."""
    response = deliver(server, "echo", b'{"webhookId":"wh_1"}', **{"Upstash-Retried": "2"})
    assert response.status_code == 200
    assert response.json() == {"webhookId": "wh_1", "retried": 2}


def test_forged_delivery_is_401(server: Server) -> None:
    """A delivery signed with another key is refused over the wire."""
    body = b'{"webhookId":"wh_1"}'
    token = sign(body, url=f"{APP_URL}/api/jobs/echo", key="sig_forger_0123456789abcdefghijk")
    response = httpx.post(
        f"{server.url}/api/jobs/echo", content=body, headers={"Upstash-Signature": token}
    )
    assert response.status_code == 401
    assert response.json()["code"] == "signature_mismatch"


def test_non_retryable_status_and_header_reach_the_caller(server: Server) -> None:
    """489 and Upstash-NonRetryable-Error: true survive gunicorn's HTTP layer."""
    response = deliver(server, "give-up", b"{}")
    assert response.status_code == 489
    assert response.headers["Upstash-NonRetryable-Error"] == "true"


def test_chunked_body_over_the_limit_is_non_retryable(server: Server) -> None:
    """A chunked body with no Content-Length is cut off at QSTASH_MAX_BODY_SIZE."""
    body = b'{"webhookId":"' + b"x" * 10_000 + b'"}'
    token = sign(body, url=f"{APP_URL}/api/jobs/echo", key=CURRENT_KEY)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = httpx.post(
        f"{server.url}/api/jobs/echo",
        content=chunks(),
        headers={"Upstash-Signature": token},
        timeout=10,
    )
    assert response.status_code == 489
    assert response.json()["code"] == "payload_too_large"


def test_healthz_over_the_wire(server: Server) -> None:
    """GET /healthz answers ready with the mounted jobs."""
    response = httpx.get(f"{server.url}/healthz")
    assert response.json()["jobs"] == ["echo", "give-up", "noop"]


def test_gunicorn_refuses_to_boot_without_keys(tmp_path: Path) -> None:
    """Without signing keys gunicorn exits at once, naming the missing variables in one line."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("QSTASH_") and k not in ("APP_URL", "FLASK_DEBUG")
    }
    result = subprocess.run(
        [
            GUNICORN,
            "wsgi:app",
            "-c",
            str(ROOT / "gunicorn.conf.py"),
            "-b",
            f"127.0.0.1:{free_port()}",
            "--control-socket",
            str(tmp_path / "g.ctl"),
        ],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "QSTASH_CURRENT_SIGNING_KEY, QSTASH_NEXT_SIGNING_KEY, APP_URL not set" in lines[0]
    assert "Traceback" not in result.stderr
