"""A local stand-in for Resend's API: records each request, answers from a script.

Used with the real ``resend`` SDK pointed at it (``RESEND_API_URL``), over HTTP or, with
an ``ssl_context``, HTTPS. HTTP/1.1 keep-alive, so pooled clients reuse connections.
"""

from __future__ import annotations

import json
import ssl
import threading
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """A scripted answer."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        fake = self.server.fake
        headers = {name.lower(): value for name, value in self.headers.items()}
        with fake.lock:
            fake.requests.append(Recorded(self.command, self.path, headers, body))
            reply = fake.replies.popleft() if fake.replies else Reply()
        payload = reply.body if reply.body is not None else {"id": str(uuid.uuid4())}
        raw = json.dumps(payload).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeResend


class FakeResend:
    """The recording server; ``url`` is what RESEND_API_URL should be."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.replies: deque[Reply] = deque()
        self.lock = threading.Lock()
        self.url = ""

    def reply(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, then with 200 + an id again."""
        self.replies.extend(replies)


@contextmanager
def fake_resend(ssl_context: ssl.SSLContext | None = None) -> Iterator[FakeResend]:
    """Run a ``FakeResend`` on a free loopback port until the block ends."""
    fake = FakeResend()
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = fake
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if ssl_context else "http"
    fake.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
