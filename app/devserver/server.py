"""``DevServer``: the store, the delivery loop, the scheduler and the API, wired together.

```python
with DevServer(db="qstash.db", time_scale=0.01).running(port=0) as server:
    print(server.url)   # http://127.0.0.1:<port>
```

Defaults are Upstash's public dev identity (``app.config.DEV_IDENTITY``): port 8080, the
dev token and both dev signing keys, so the official SDKs in dev mode work unchanged.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from app.config import DEV_IDENTITY
from app.devserver.api import API
from app.devserver.delivery import DEFAULT_TIMEOUT, Dispatcher, Listener
from app.devserver.scheduler import Scheduler
from app.devserver.store import Store

#: QStash's documented deduplication window.
DEDUP_WINDOW = 600.0
DEFAULT_PORT = 8080


class QuietHandler(WSGIRequestHandler):
    """Log nothing per API request: the CLI prints one line per delivery attempt instead."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class DevServer:
    """A local, QStash-compatible server with durable state."""

    def __init__(
        self,
        *,
        db: str | Path | None = None,
        token: str = DEV_IDENTITY["QSTASH_TOKEN"],
        current_key: str = DEV_IDENTITY["QSTASH_CURRENT_SIGNING_KEY"],
        next_key: str = DEV_IDENTITY["QSTASH_NEXT_SIGNING_KEY"],
        time_scale: float = 1.0,
        concurrency: int = 32,
        per_destination: int | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._tmp = None if db else tempfile.TemporaryDirectory(prefix="qstash-dev-")
        self.db_path = Path(db) if db else Path(self._tmp.name) / "qstash.db"  # type: ignore[union-attr]
        self.token = token
        self.current_key = current_key
        self.next_key = next_key
        self.time_scale = time_scale
        self.dedup_window = DEDUP_WINDOW * time_scale
        self.log = logging.getLogger("app.devserver")
        self.store = Store(self.db_path)
        self.dispatcher = Dispatcher(
            self.store,
            signing_key=current_key,
            concurrency=concurrency,
            per_destination=per_destination,
            time_scale=time_scale,
            default_timeout=default_timeout,
        )
        self.scheduler = Scheduler(self.store, self.dispatcher, time_scale=time_scale)
        self.api = API(self)
        self._http: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._queue_lock = threading.Lock()

    @property
    def url(self) -> str:
        """The base URL the API listens on."""
        assert self._http is not None, "the server is not listening"
        return f"http://{self._http.host}:{self._http.port}"

    def on_attempt(self, listener: Listener) -> None:
        """Call ``listener`` with every finished delivery attempt."""
        self.dispatcher.listeners.append(listener)

    def env(self) -> dict[str, str]:
        """Return the environment a publisher or an app needs to use this server."""
        return {
            "QSTASH_URL": self.url,
            "QSTASH_TOKEN": self.token,
            "QSTASH_CURRENT_SIGNING_KEY": self.current_key,
            "QSTASH_NEXT_SIGNING_KEY": self.next_key,
        }

    def ensure_queue(self, name: str) -> None:
        """Create the queue ``name`` with parallelism 1 if it does not exist (as enqueue does)."""
        with self._queue_lock:
            if self.store.queue(name) is None:
                self.set_queue(name, 1, False)

    def set_queue(self, name: str, parallelism: int, paused: bool) -> None:
        """Create or update a queue and apply it to waiting deliveries."""
        self.store.upsert_queue(name, parallelism, paused, time.time())
        self.dispatcher.set_queue(name, parallelism, paused)

    def start(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        """Listen on ``host:port`` (0: any free port) and start delivering."""
        self._http = make_server(host, port, self.api, threaded=True, request_handler=QuietHandler)
        self._http.daemon_threads = True  # type: ignore[attr-defined]
        self.dispatcher.start()
        self.scheduler.start()
        self.api.waiters.start()
        # A short poll interval keeps stop() (and each test using a server) fast.
        self._thread = threading.Thread(
            target=self._http.serve_forever, args=(0.05,), name="qstash-api", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening, stop scheduling, finish running deliveries, close the store."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        self.scheduler.stop()
        self.api.waiters.stop()
        self.dispatcher.stop()
        self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    @contextmanager
    def running(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> Iterator[DevServer]:
        """Run the server for the duration of a ``with`` block."""
        self.start(host, port)
        try:
            yield self
        finally:
            self.stop()
