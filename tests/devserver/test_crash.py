"""At least once across a crash: SIGKILL mid-delivery, restart, every message delivered."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
from werkzeug.wrappers import Request, Response

from app.config import DEV_IDENTITY
from tests.devserver.endpoint import Endpoint
from tests.devserver.processes import start_dev_server
from tests.servers import free_port, stop

pytestmark = pytest.mark.e2e
MESSAGES = 1000


def test_sigkill_mid_load_loses_nothing(tmp_path: Path, endpoint: Endpoint) -> None:
    """All N accepted messages are delivered although the server was SIGKILLed mid-load."""

    def slowish(request: Request) -> Response:
        time.sleep(0.02)
        return Response("ok")

    endpoint.replies["/load"] = slowish
    port, db, log = free_port(), tmp_path / "qstash.db", tmp_path / "dev.log"
    process = start_dev_server(port, db, log)
    headers = {"Authorization": f"Bearer {DEV_IDENTITY['QSTASH_TOKEN']}"}
    accepted: set[str] = set()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as api:
            for start in range(0, MESSAGES, 100):
                batch = [
                    {"destination": endpoint.url("/load"), "body": str(n)}
                    for n in range(start, start + 100)
                ]
                accepted |= {a["messageId"] for a in api.post("/v2/batch", json=batch).json()}
        endpoint.wait_for("/load", 100, timeout=20)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        before = {r.headers["Upstash-Message-Id"] for r in endpoint.at("/load")}
        assert len(before) < MESSAGES, "the load finished before the kill; make it slower"
        process = start_dev_server(port, db, log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            delivered = {r.headers["Upstash-Message-Id"] for r in endpoint.at("/load")}
            if delivered >= accepted:
                break
            time.sleep(0.1)
        assert len(accepted) == MESSAGES
        assert accepted - delivered == set()
    finally:
        stop(process)
