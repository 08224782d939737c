"""The delivery loop's HTTP/1.1 client: one request out, one answer (or why none) back.

The dev server makes one kind of call: a method, an absolute http(s) URL, a few headers and
a body, answered by a status, headers and a body it keeps up to ``MAX_BODY`` bytes. That is
all this does, on the standard library's sockets and ``ssl`` (certificates verified as any
client does). It replaced urllib3 there, which took 60 % of the dev server's CPU per
delivery: its request goes through several layers of Python and its answer's headers
through ``email.parser`` (``bench/devserver.py``).

Why not the standard library's ``http.client``: it was tried in this module's place (same
behaviour, all of ``tests/devserver/test_transport.py`` passing) and cost 1.54x the dev
server's CPU per delivery (1.23-2.11x over 5 alternating pairs) and ~3x the client CPU per
request, mostly in ``email.feedparser``. It also needed most of this module's checks on top
(conflicting ``Content-Length``, header lines without a colon, 1xx other than 100, one
deadline per call) and reads chunk sizes as leniently as ``int(line, 16)``, which this
module refuses (``0x5``, ``+5``, ``0_5``: RFC 9112 says 1*HEXDIG).

- The answer is framed as RFC 9112 §6.3 says: no body for HEAD, 1xx, 204 and 304; chunked;
  ``Content-Length``; else until the connection closes. A 1xx before the answer is skipped.
- Connections are kept for the next call unless the answer says ``Connection: close``, is
  not HTTP/1.1, or was cut at ``MAX_BODY``; an idle one the peer has closed is dropped
  before use. A kept connection that fails before any byte of an answer (the peer closed
  it at that moment) is retried once on a new connection.
- ``timeout`` bounds the whole call: connecting, sending, every read.
- Errors are answers with no status and a reason: ``cannot connect to host:port: Connection
  refused``, ``timeout after 30s``, ``invalid header …``, ``malformed answer: …``.
"""

from __future__ import annotations

import functools
import re
import select
import socket
import ssl
import threading
import time
from urllib.parse import quote, urlsplit

from app.devserver.callbacks import Response

#: Bytes of an answer's body kept; the rest is not read (and the connection not reused).
MAX_BODY = 1024 * 1024
#: Longest status line plus headers read before the answer is called malformed.
MAX_HEAD = 64 * 1024
READ_SIZE = 64 * 1024
#: Characters left as they are when a URL's path and query are sent (all printable ASCII).
_SAFE = "".join(chr(c) for c in range(33, 127))
_NO_BODY_STATUSES = frozenset({204, 304})
_HEXDIG = b"0123456789abcdefABCDEF"


class _Failed(Exception):
    """The call got no answer; the message says why."""


class _Stale(Exception):
    """A kept connection gave nothing back: the peer had closed it."""


Key = tuple[str, str, int]


class Transport:
    """Sends requests, keeping up to ``keep`` idle connections per host."""

    def __init__(self, *, keep: int = 16, tls: ssl.SSLContext | None = None) -> None:
        self.keep = keep
        self._idle: dict[Key, list[socket.socket]] = {}
        self._lock = threading.Lock()
        #: How https destinations are verified: the system's CAs unless told otherwise.
        self._tls = tls

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for sockets in idle.values():
            for sock in sockets:
                sock.close()

    def request(
        self, method: str, url: str, *, body: bytes, headers: dict[str, str], timeout: float
    ) -> Response:
        """Send one request and return the answer, or a Response with no status and why."""
        deadline = time.monotonic() + timeout
        try:
            key, family, target, authority = _where(url)
            head = _request_head(method, target, authority, headers, len(body))
            sock = self._take(key)
            if sock is not None:
                try:
                    return self._exchange(key, sock, head, body, method, deadline, reused=True)
                except _Stale:
                    pass
            sock = self._connect(key, family, deadline)
            return self._exchange(key, sock, head, body, method, deadline, reused=False)
        except TimeoutError:
            return Response(None, {}, b"", f"timeout after {timeout:g}s")
        except _Failed as exc:
            return Response(None, {}, b"", str(exc)[:300])
        except (OSError, ValueError) as exc:
            return Response(None, {}, b"", f"{type(exc).__name__}: {exc}"[:300])

    # -- connections ---------------------------------------------------------------------

    def _take(self, key: Key) -> socket.socket | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                sock = idle.pop()
            # An idle connection with something to read was closed (or garbled) by the peer.
            if not _readable(sock):
                return sock
            sock.close()

    def _give_back(self, key: Key, sock: socket.socket) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.keep:
                idle.append(sock)
                return
        sock.close()

    def _connect(self, key: Key, family: int, deadline: float) -> socket.socket:
        scheme, host, port = key
        try:
            if family:  # an IP address: no name to look up
                sock = socket.socket(family, socket.SOCK_STREAM)
                try:
                    sock.settimeout(_left(deadline))
                    sock.connect((host, port))
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((host, port), timeout=_left(deadline))
        except TimeoutError:
            raise
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise _Failed(f"cannot connect to {host}:{port}: {reason}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=host)
            except ssl.SSLError as exc:
                sock.close()
                raise _Failed(f"TLS with {host}:{port} failed: {exc}") from None
            except BaseException:
                sock.close()
                raise
        return sock

    # -- one exchange --------------------------------------------------------------------

    def _exchange(
        self,
        key: Key,
        sock: socket.socket,
        head: bytes,
        body: bytes,
        method: str,
        deadline: float,
        *,
        reused: bool,
    ) -> Response:
        keep = False
        try:
            sock.settimeout(_left(deadline))
            reader = _Reader(sock, deadline)
            try:
                sock.sendall(head + body if len(body) < READ_SIZE else head)
                if len(body) >= READ_SIZE:
                    sock.sendall(body)
                status, version, headers = reader.head()
            except (ConnectionError, _Failed):
                if reused and not reader.got_any:
                    raise _Stale from None
                raise
            answer, complete = reader.body(method, status, headers)
            keep = complete and version == "HTTP/1.1" and not _says_close(headers)
            return Response(status, headers, answer)
        finally:
            if keep:
                self._give_back(key, sock)
            else:
                sock.close()


class _Reader:
    """Reads one answer from a socket, every read bounded by the call's deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = bytearray()
        self.got_any = False

    def _more(self) -> bool:
        self.sock.settimeout(_left(self.deadline))
        chunk = self.sock.recv(READ_SIZE)
        if chunk:
            self.got_any = True
            self.buffer += chunk
        return bool(chunk)

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD:
                raise _Failed("malformed answer: a line longer than 64 KiB")
            if not self._more():
                raise _Failed("connection closed before a complete answer")
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def head(self) -> tuple[int, str, dict[str, list[str]]]:
        """Read the status line and headers, skipping interim (1xx) answers."""
        while True:
            while (end := self.buffer.find(b"\r\n\r\n")) < 0:
                if len(self.buffer) > MAX_HEAD:
                    raise _Failed("malformed answer: a head longer than 64 KiB")
                if not self._more():
                    raise _Failed("connection closed before a complete answer")
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            del self.buffer[: end + 4]
            version, _, rest = lines[0].partition(" ")
            code = rest[:3]
            if not (version.startswith("HTTP/1.") and _digits(code) and len(code) == 3):
                raise _Failed(f"malformed answer: status line {lines[0][:80]!r}")
            headers: dict[str, list[str]] = {}
            last = ""
            for line in lines[1:]:
                if line[:1] in (" ", "\t") and last:  # obsolete line folding
                    headers[last][-1] += " " + line.strip()
                    continue
                name, colon, value = line.partition(":")
                name = name.strip()
                if not colon or not name:
                    raise _Failed(f"malformed answer: header line {line[:80]!r}")
                last = canonical(name)
                headers.setdefault(last, []).append(value.strip())
            status = int(code)
            if not 100 <= status < 200 or status == 101:
                return status, version, headers

    def body(self, method: str, status: int, headers: dict[str, list[str]]) -> tuple[bytes, bool]:
        """Read the body (at most MAX_BODY bytes); say whether it was read completely."""
        if method == "HEAD" or status < 200 or status in _NO_BODY_STATUSES:
            return b"", not self.buffer
        coding = ",".join(headers.get("Transfer-Encoding", ())).lower()
        if coding:
            if coding.rsplit(",", 1)[-1].strip() != "chunked":
                return self._until_closed(), False
            return self._chunked()
        lengths = {
            v.strip() for value in headers.get("Content-Length", ()) for v in value.split(",")
        }
        if not lengths:
            return self._until_closed(), False
        if len(lengths) > 1 or not all(_digits(v) for v in lengths):
            raise _Failed(f"malformed answer: Content-Length {sorted(lengths)}")
        length = int(lengths.pop())
        wanted = min(length, MAX_BODY)
        while len(self.buffer) < wanted:
            if not self._more():
                raise _Failed("connection closed before the whole body was read")
        answer = bytes(self.buffer[:wanted])
        return answer, length <= MAX_BODY and len(self.buffer) == length

    def _until_closed(self) -> bytes:
        while len(self.buffer) < MAX_BODY and self._more():
            pass
        return bytes(self.buffer[:MAX_BODY])

    def _chunked(self) -> tuple[bytes, bool]:
        answer = bytearray()
        while True:
            size_line = self._line().split(b";", 1)[0].strip()
            # 1*HEXDIG (RFC 9112 §7.1): int() alone would take "0x1a", "+1a" or "1_a".
            if not size_line or size_line.strip(_HEXDIG):
                raise _Failed(f"malformed answer: chunk size {size_line[:20]!r}")
            size = int(size_line, 16)
            if size == 0:
                while self._line():  # trailers, then the empty line
                    pass
                return bytes(answer), not self.buffer
            while len(self.buffer) < size + 2:
                if len(answer) + len(self.buffer) >= MAX_BODY:
                    answer += self.buffer
                    return bytes(answer[:MAX_BODY]), False
                if not self._more():
                    raise _Failed("connection closed before the whole body was read")
            if self.buffer[size : size + 2] != b"\r\n":
                raise _Failed("malformed answer: a chunk is longer than its size says")
            answer += self.buffer[:size]
            del self.buffer[: size + 2]
            if len(answer) >= MAX_BODY:
                return bytes(answer[:MAX_BODY]), False


@functools.lru_cache(maxsize=1024)
def _where(url: str) -> tuple[Key, int, str, str]:
    """Return where ``url`` is reached, the address family if its host is an IP address
    (else 0), the request target (path and query) and the ``Host`` header."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise _Failed(f"cannot send to {url[:100]!r}: not an absolute http(s) URL")
    host = parts.hostname
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    port = parts.port or (443 if scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if not target.isascii():
        target = quote(target, safe=_SAFE)
    authority = parts.netloc.rpartition("@")[2]
    if not authority.isascii():
        authority = (f"[{host}]" if ":" in host else host) + (f":{port}" if parts.port else "")
    family = 0
    for candidate in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(candidate, host)
        except OSError:
            continue
        family = candidate
        break
    return (scheme, host, port), family, target, authority


def _request_head(
    method: str, target: str, authority: str, headers: dict[str, str], length: int
) -> bytes:
    """Return the request line and headers, ready to send."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}"]
    encoding = False
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or _NOT_IN_VALUE.search(value):
            raise _Failed(f"invalid header {name[:60]!r}: it cannot be sent over HTTP/1.1")
        encoding = encoding or name.lower() == "accept-encoding"
        lines.append(f"{name}: {value}")
    if not encoding:
        lines.append("Accept-Encoding: identity")
    lines.append(f"Content-Length: {length}\r\n\r\n")
    try:
        return "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise _Failed("a header value is not Latin-1: it cannot be sent over HTTP/1.1") from None


#: A header name: RFC 9110's token characters.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: What a header value cannot hold on the wire (it would end the header, or the head).
_NOT_IN_VALUE = re.compile(r"[\r\n\0]")


def _readable(sock: socket.socket) -> bool:
    if hasattr(select, "poll"):  # select() fails on descriptors past 1023
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])


def _says_close(headers: dict[str, list[str]]) -> bool:
    return any("close" in value.lower() for value in headers.get("Connection", ()))


@functools.lru_cache(maxsize=256)
def canonical(name: str) -> str:
    """Return a header name as QStash (Go) spells it: ``upstash-workflow-runid`` →
    ``Upstash-Workflow-Runid``."""
    return "-".join(part.capitalize() for part in name.split("-"))


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _digits(text: str) -> bool:
    """Say whether ``text`` is ASCII digits only: ``str.isdigit`` also takes ``²`` and ``٣``."""
    return text.isascii() and text.isdigit()
