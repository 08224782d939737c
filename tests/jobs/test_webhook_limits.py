"""deliver-webhook against hostile subscribers on 127.0.0.1: bounded bytes, memory and time.

Each server here is real (a TCP socket on loopback) and answers from a script of byte
strings and pauses: a gzip bomb, a body dripping one byte a second, headers dripping, no
answer at all. The delivery must end within WEBHOOK_TIMEOUT plus a small slack, holding
little memory, whatever the server does.
"""

from __future__ import annotations

import socketserver
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import outbound
from app.testing import DeliveryClient
from tests.jobs.conftest import make_app
from tests.servers import serving

TIMEOUT = 1.0
SLACK = 0.6
CAP = 1024
Step = bytes | float  # bytes to send, or seconds to wait


def gzip_of_zeros(size: int, *, layers: int = 2) -> bytes:
    """Return ``size`` zero bytes gzipped ``layers`` times, built without holding them."""
    data = b""
    for layer in range(layers):
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
        parts: list[bytes] = []
        if layer == 0:
            block = b"\0" * (1024 * 1024)
            for _ in range(size // len(block)):
                parts.append(packer.compress(block))
        else:
            parts.append(packer.compress(data))
        parts.append(packer.flush())
        data = b"".join(parts)
    return data


class _Scripted(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.request.settimeout(5)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            received += chunk
        self.server.requests.append(received)
        for step in self.server.script:
            if self.server.stopping.is_set():
                return
            try:
                if isinstance(step, bytes):
                    self.request.sendall(step)
                else:
                    self.server.stopping.wait(step)
            except OSError:
                return  # the client gave up: what a deadline is for


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    script: Sequence[Step]
    stopping: threading.Event
    requests: list[bytes]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@contextmanager
def scripted(*script: Step) -> Iterator[tuple[str, _Server]]:
    """Serve ``script`` to every connection on a free loopback port; yield its URL."""
    server = _Server(("127.0.0.1", 0), _Scripted)
    server.script, server.stopping, server.requests = script, threading.Event(), []
    try:
        with serving(server):
            yield f"http://127.0.0.1:{server.server_address[1]}/hook", server
    finally:
        server.stopping.set()


def head(status: str = "200 OK", **headers: str | int) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture
def app(job_config: dict[str, Any], tmp_path: Path) -> Iterator[Flask]:
    config = {
        **job_config,
        "WEBHOOK_ALLOWED_NETWORKS": ["127.0.0.1/32"],
        "WEBHOOK_TIMEOUT": TIMEOUT,
        "WEBHOOK_CONNECT_TIMEOUT": TIMEOUT,
        "WEBHOOK_MAX_RESPONSE_BYTES": CAP,
    }
    flask_app = make_app(config, tmp_path / "instance")
    with scripted(head("204 No Content")) as (url, _):  # first-call costs, not measured
        assert DeliveryClient(flask_app).deliver("deliver-webhook", payload(url)).status_code == 200
    yield flask_app
    cached = flask_app.extensions.get("qstash_jobs.webhook_client")
    if cached:
        cached[1].close()


def payload(url: str) -> dict[str, Any]:
    return {
        "webhookId": "wh_1",
        "eventType": "invoice.paid",
        "payload": {"n": 1},
        "targetUrl": url,
        "secret": "a raw secret",
    }


@contextmanager
def measured() -> Iterator[dict[str, float]]:
    """Measure the block's wall time and its peak of Python allocations."""
    result: dict[str, float] = {}
    tracemalloc.start()
    started = time.monotonic()
    try:
        yield result
    finally:
        result["seconds"] = time.monotonic() - started
        result["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


BOMB_SIZE = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_of_zeros(BOMB_SIZE)


def test_gzip_bomb_is_counted_as_sent_and_never_inflated(
    client: DeliveryClient, bomb: bytes
) -> None:
    """A 200 whose few hundred bytes inflate to 64 MiB through two gzip layers stays small."""
    answer = head(Content_Encoding="gzip, gzip", Content_Length=len(bomb)) + bomb
    with scripted(answer) as (url, server), measured() as cost:
        response = client.deliver("deliver-webhook", payload(url))
    result = response.get_json()
    assert response.status_code == 200, result
    assert (result["responseBytes"], result["responseTruncated"]) == (len(bomb), False)
    assert cost["peak"] < 4 * 1024 * 1024, cost  # the bomb alone would be 64 MiB
    assert cost["seconds"] < TIMEOUT + SLACK
    assert b"accept-encoding: identity" in server.requests[0].lower()


def test_large_compressed_answer_is_cut_at_the_cap(client: DeliveryClient) -> None:
    """Compressed bytes past WEBHOOK_MAX_RESPONSE_BYTES are not read, let alone inflated."""
    body = gzip_of_zeros(16 * 1024 * 1024, layers=1)  # 16 KB that would inflate to 16 MiB
    answer = head(Content_Encoding="gzip", Content_Length=len(body)) + body
    with scripted(answer) as (url, _), measured() as cost:
        response = client.deliver("deliver-webhook", payload(url))
    result = response.get_json()
    assert (result["responseBytes"], result["responseTruncated"]) == (CAP, True)
    assert cost["peak"] < 4 * 1024 * 1024, cost


def drip(data: bytes, every: float) -> list[Step]:
    steps: list[Step] = []
    for byte in data:
        steps += [bytes([byte]), every]
    return steps


@pytest.mark.parametrize(
    "script",
    [
        pytest.param([head(Content_Length=60), *drip(b"x" * 60, 1.0)], id="body-1-byte-per-s"),
        pytest.param(drip(head(Content_Length=0), 0.3), id="headers-dripping"),
        pytest.param([30.0], id="no-answer"),
        pytest.param([head(Content_Length=100), b"x" * 10, 30.0], id="body-stalls"),
    ],
)
def test_slow_targets_are_cut_off_at_the_deadline(
    client: DeliveryClient, script: list[Step]
) -> None:
    """However the target stalls, the delivery ends after WEBHOOK_TIMEOUT: a retry, not a hang."""
    with scripted(*script) as (url, _), measured() as cost:
        response = client.deliver("deliver-webhook", payload(url))
    assert response.status_code == 503, response.get_json()
    assert "timed out" in response.get_json()["message"]
    assert cost["seconds"] < TIMEOUT + SLACK, cost


def test_slow_name_lookup_is_cut_off_at_the_deadline(
    client: DeliveryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscriber's name server that takes 10 s costs the deadline, not the 10 s."""
    release = threading.Event()

    def slow(host: str, port: int) -> list[str]:
        release.wait(10)
        return ["127.0.0.1"]

    monkeypatch.setattr(outbound, "resolve", slow)
    try:
        with measured() as cost:
            response = client.deliver("deliver-webhook", payload("http://slow-dns.example/x"))
        assert response.status_code == 503, response.get_json()
        assert "timed out" in response.get_json()["message"]
        assert cost["seconds"] < TIMEOUT + SLACK, cost
    finally:
        release.set()
