"""A minimal HTTP/1.1 receiver run in its own process, for the benchmarks.

It answers every POST with ``200 {"id": …}`` over keep-alive connections, optionally
over TLS, so both sides of a comparison talk to the very same server.
"""

from __future__ import annotations

import multiprocessing
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes

    delay = 0.0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.delay:
            time.sleep(self.delay)
        body = b'{"id":"' + uuid.uuid4().hex.encode() + b'"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(sock: socket.socket, certfile: str | None, keyfile: str | None, delay: float) -> None:
    _Handler.delay = delay
    server = ThreadingHTTPServer(sock.getsockname(), _Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.daemon_threads = True
    if certfile:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        server.socket = context.wrap_socket(sock, server_side=True)
    server.serve_forever(poll_interval=0.1)


@contextmanager
def receiver(
    certfile: str | None = None, keyfile: str | None = None, *, delay: float = 0.0
) -> Iterator[str]:
    """Run the receiver in a child process on a free loopback port; yield its base URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    process = multiprocessing.get_context("fork").Process(
        target=_serve, args=(sock, certfile, keyfile, delay), daemon=True
    )
    process.start()
    scheme = "https" if certfile else "http"
    try:
        yield f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        process.terminate()
        process.join(timeout=5)
        sock.close()
