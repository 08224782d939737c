"""A scriptable HTTP endpoint on loopback that records every request it gets."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tests.servers import serving

Reply = Callable[[Request], Response]


@dataclass
class Received:
    """One request the endpoint got."""

    path: str
    url: str
    headers: dict[str, str]
    body: bytes
    #: When the request arrived (its reply may come later).
    at: float


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class Endpoint:
    """Answers by path with scripted replies (default 200) and records requests."""

    base: str = ""
    received: list[Received] = field(default_factory=list)
    replies: dict[str, Reply] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def url(self, path: str) -> str:
        """Return the absolute URL of ``path`` on this endpoint."""
        return self.base + path

    def handle(self, request: Request) -> Response:
        """Record ``request`` and answer it with the reply scripted for its path."""
        arrived = time.time()
        reply = self.replies.get(request.path, lambda r: Response("ok"))
        response = reply(request)
        with self.changed:
            self.received.append(
                Received(
                    request.path,
                    request.url,
                    dict(request.headers),
                    request.get_data(),
                    arrived,
                )
            )
            self.changed.notify_all()
        return response

    def at(self, path: str) -> list[Received]:
        """Return the requests received on ``path``."""
        with self.changed:
            return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 10) -> list[Received]:
        """Wait until ``path`` got ``count`` requests; return them (fail after ``timeout``)."""
        with self.changed:
            ok = self.changed.wait_for(lambda: len(self.at(path)) >= count, timeout)
        got = self.at(path)
        assert ok, f"{path}: expected {count} requests within {timeout}s, got {len(got)}"
        return got


@contextmanager
def running_endpoint() -> Iterator[Endpoint]:
    """Serve an ``Endpoint`` on a free loopback port."""
    endpoint = Endpoint()
    server = make_server(
        "127.0.0.1", 0, Request.application(endpoint.handle), threaded=True, request_handler=_Quiet
    )
    endpoint.base = f"http://127.0.0.1:{server.port}"
    with serving(server):
        yield endpoint
