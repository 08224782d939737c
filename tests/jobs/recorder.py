"""A local HTTP server that records each request and answers from a script.

Stands in for Resend's API (the real ``resend`` SDK pointed at it with RESEND_API_URL)
and for webhook receivers. HTTP/1.1 keep-alive, so pooled clients reuse connections;
HTTPS with an ``ssl_context``.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.servers import serving


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """A scripted answer: JSON (or raw bytes) with a status, headers and a delay."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: Seconds between body bytes (a target that drips its answer).
    drip: float = 0.0

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        payload = self.body if self.body is not None else {"id": str(uuid.uuid4())}
        return json.dumps(payload).encode(), "application/json"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.recorder.record(Recorded(self.command, self.path, headers, body))
        time.sleep(reply.delay)
        raw, content_type = reply.encoded()
        self.send_response(reply.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not reply.drip:
            self.wfile.write(raw)
            return
        for byte in raw:
            self.wfile.write(bytes([byte]))
            time.sleep(reply.drip)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    recorder: Recorder

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout tests) is expected, not news


class Recorder:
    """The recording side of the server; ``url`` is its base URL."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.replies: deque[Reply] = deque()
        self.lock = threading.Lock()
        self.url = ""

    def reply(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, then with 200 + an id again."""
        with self.lock:
            self.replies.extend(replies)

    def record(self, request: Recorded) -> Reply:
        """Store ``request`` and return the reply it gets."""
        with self.lock:
            self.requests.append(request)
            return self.replies.popleft() if self.replies else Reply()


@contextmanager
def recording_server(ssl_context: ssl.SSLContext | None = None) -> Iterator[Recorder]:
    """Run a recording server on a free loopback port until the block ends."""
    recorder = Recorder()
    server = _Server(("127.0.0.1", 0), _Handler)
    server.recorder = recorder
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if ssl_context else "http"
    recorder.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    with serving(server):
        yield recorder
