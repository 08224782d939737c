"""The dev server's HTTP client (``transport.py``) against a scripted raw socket server.

Each test scripts the bytes the server answers, and checks what the client made of them
and what it sent: framing (length, chunked, until close, none), interim answers, the body
cut at ``MAX_BODY``, kept connections and a stale one, timeouts, refusals and the header
values that cannot be sent.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import trustme

from app.devserver import transport
from app.devserver.transport import Transport
from tests.servers import free_port

Script = Callable[[socket.socket, bytes], None]


class RawServer:
    """Accepts connections; reads each request head (and body) and runs ``script`` on it."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                request, buffer = head + b"\r\n\r\n" + buffer[:length], buffer[length:]
                self.requests.append(request)
                try:
                    self.script(conn, request)
                except OSError:
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Script], RawServer]]:
    servers: list[RawServer] = []

    def start(script: Script) -> RawServer:
        servers.append(RawServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def client() -> Iterator[Transport]:
    kept = Transport()
    yield kept
    kept.close()


def answer(data: bytes) -> Script:
    """A script answering every request with ``data``; the connection stays open."""
    return lambda conn, request: conn.sendall(data)


def answer_and_close(data: bytes) -> Script:
    def script(conn: socket.socket, request: bytes) -> None:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)

    return script


def post(client: Transport, url: str, *, timeout: float = 5, **headers: str) -> transport.Response:
    return client.request("POST", url, body=b'{"a":1}', headers=headers, timeout=timeout)


def test_request_line_headers_and_body_as_sent(
    client: Transport, serve: Callable[[Script], RawServer]
) -> None:
    server = serve(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    got = post(client, server.url("/a/b/?q=a%2Fb&empty="), **{"X-Token": "t"})
    assert (got.status, got.body, got.error) == (200, b"ok", None)
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /a/b/?q=a%2Fb&empty= HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}" in lines
    assert {"X-Token: t", "Content-Length: 7", "Accept-Encoding: identity"} <= set(lines)
    assert body == b'{"a":1}'


def test_a_non_ascii_path_is_percent_encoded(
    client: Transport, serve: Callable[[Script], RawServer]
) -> None:
    server = serve(answer(b"HTTP/1.1 204 No Content\r\n\r\n"))
    got = post(client, server.url("/caf\u00e9?x=\u00fc"))
    assert got.status == 204 and got.body == b""
    assert server.requests[0].startswith(b"POST /caf%C3%A9?x=%C3%BC HTTP/1.1\r\n")


def test_answer_headers_are_canonical_and_repeated(
    client: Transport, serve: Callable[[Script], RawServer]
) -> None:
    server = serve(
        answer(
            b"HTTP/1.1 489 Whatever\r\nupstash-nonretryable-error: true\r\nSet-Cookie: a=1\r\n"
            b"set-cookie: b=2\r\nX-Folded: one\r\n two\r\nContent-Length: 0\r\n\r\n"
        )
    )
    got = post(client, server.url())
    assert got.status == 489
    assert got.headers["Upstash-Nonretryable-Error"] == ["true"]
    assert got.headers["Set-Cookie"] == ["a=1", "b=2"]
    assert got.headers["X-Folded"] == ["one two"]


def test_chunked_body(client: Transport, serve: Callable[[Script], RawServer]) -> None:
    server = serve(
        answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
        )
    )
    assert post(client, server.url()).body == b"hello world"
    assert post(client, server.url()).body == b"hello world"
    assert server.connections == 1  # a complete chunked answer keeps the connection


def test_body_until_close_and_interim_answers(
    client: Transport, serve: Callable[[Script], RawServer]
) -> None:
    server = serve(answer_and_close(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 500 Oops\r\n\r\nboom"))
    got = post(client, server.url())
    assert (got.status, got.body) == (500, b"boom")


def test_connection_kept_unless_closed(
    client: Transport, serve: Callable[[Script], RawServer]
) -> None:
    kept = serve(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    closing = serve(answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
    for _ in range(3):
        assert post(client, kept.url()).status == 200
        assert post(client, closing.url()).status == 200
    assert (kept.connections, closing.connections) == (1, 3)


def test_a_kept_connection_closed_by_the_peer_is_not_used(
    client: Transport,
    serve: Callable[[Script], RawServer],
) -> None:
    """The server closes each connection after answering, without saying so."""
    server = serve(answer_and_close(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    for _ in range(3):
        assert post(client, server.url()).body == b"ok"
        time.sleep(0.05)
    assert server.connections == 3


def test_a_kept_connection_that_dies_unanswered_is_retried_once(
    client: Transport,
    serve: Callable[[Script], RawServer],
) -> None:
    """The peer closes a kept connection as the next request arrives: a new one is made."""
    answered = 0

    def script(conn: socket.socket, request: bytes) -> None:
        nonlocal answered
        if answered == 1:
            answered += 1
            conn.close()
            raise OSError("closed on purpose")
        answered += 1
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = serve(script)
    assert post(client, server.url()).body == b"ok"
    assert post(client, server.url()).body == b"ok"
    assert server.connections == 2 and len(server.requests) == 3


def test_the_body_is_cut_at_max_body(
    client: Transport, serve: Callable[[Script], RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "MAX_BODY", 10)
    big = serve(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 26\r\n\r\nabcdefghijklmnopqrstuvwxyz"))
    chunked = serve(
        answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\n" + b"z" * 26 + b"\r\n")
    )
    assert post(client, big.url()).body == b"abcdefghij"
    assert post(client, chunked.url()).body == b"z" * 10
    assert post(client, big.url()).body == b"abcdefghij"
    assert big.connections == 2  # a cut answer's connection is not reused


def test_head_and_no_body_statuses(client: Transport, serve: Callable[[Script], RawServer]) -> None:
    server = serve(answer(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"))
    got = client.request("HEAD", server.url(), body=b"", headers={}, timeout=5)
    assert (got.status, got.body) == (304, b"")
    assert server.requests[0].startswith(b"HEAD /hook HTTP/1.1\r\n")


def test_timeout_bounds_the_whole_call(
    client: Transport, serve: Callable[[Script], RawServer]
) -> None:
    def trickle(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(50):
            time.sleep(0.05)
            conn.sendall(b"x")

    server = serve(trickle)
    started = time.monotonic()
    got = post(client, server.url(), timeout=0.5)
    assert got.status is None and got.error == "timeout after 0.5s"
    assert time.monotonic() - started < 1.5


def test_refused_and_unresolvable(
    client: Transport,
) -> None:
    refused = post(client, f"http://127.0.0.1:{free_port()}/x")
    assert refused.status is None and refused.error is not None
    assert refused.error.startswith("cannot connect to 127.0.0.1:") and "refused" in refused.error
    unknown = post(client, "http://no-such-host.invalid/x")
    assert unknown.error is not None and unknown.error.startswith(
        "cannot connect to no-such-host.invalid:80: "
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-A", "one\r\nX-Injected: yes"), ("X-A", "nul\0"), ("Bad Name", "v"), ("X-A", "\u2713")],
)
def test_headers_that_cannot_be_sent_fail_the_attempt(
    client: Transport, serve: Callable[[Script], RawServer], name: str, value: str
) -> None:
    server = serve(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    got = post(client, server.url(), **{name: value})
    assert got.status is None and got.error is not None
    assert server.requests == []


@pytest.mark.parametrize(
    "data",
    [
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0_5\r\nhello\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: \u00b2\r\n\r\nhello".encode("latin-1"),
        "HTTP/1.1 \u00b200 OK\r\nContent-Length: 0\r\n\r\n".encode("latin-1"),
    ],
)
def test_malformed_answers_are_errors(
    client: Transport, serve: Callable[[Script], RawServer], data: bytes
) -> None:
    server = serve(answer_and_close(data))
    got = post(client, server.url())
    assert got.status is None and got.error is not None and "malformed" in got.error


def test_https_is_verified(serve: Callable[[Script], RawServer]) -> None:
    """An https destination is reached over TLS with its certificate checked."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    plain = serve(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret"))
    tls_server = socket.create_server(("127.0.0.1", 0))
    port = tls_server.getsockname()[1]

    def relay() -> None:
        # Terminate TLS and hand each request to the plain scripted server.
        while True:
            try:
                raw, _ = tls_server.accept()
            except OSError:
                return
            try:
                conn = server_context.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                raw.close()
                continue
            with conn, socket.create_connection(("127.0.0.1", plain.port)) as upstream:
                upstream.sendall(conn.recv(65536))
                conn.sendall(upstream.recv(65536))

    threading.Thread(target=relay, daemon=True).start()
    url = f"https://127.0.0.1:{port}/hook"
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    try:
        kept = Transport(tls=trusting)
        got = post(kept, url)
        kept.close()
        assert (got.status, got.body) == (200, b"secret")
        untrusted = post(Transport(), url)
        assert untrusted.status is None and untrusted.error is not None
        assert untrusted.error.startswith(f"TLS with 127.0.0.1:{port} failed")
        assert "certificate verify failed" in untrusted.error
    finally:
        tls_server.close()
