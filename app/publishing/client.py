"""One ``QStash`` client per Flask app, built lazily from ``app.config``.

``client_for(app)`` returns ``app.extensions["qstash.client"]``, creating it on first use
from ``QSTASH_TOKEN`` and ``QSTASH_URL``. Tests put a ``StubQueue`` there instead
(``app.testing.StubQueue.install(app)``), and every publisher in the app (``Job.enqueue``,
the CLI) then talks to the stub. The client's HTTP pool opens on the first request, in the
process that makes it, so gunicorn's preloading master never shares sockets with workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from flask import current_app

from app.errors import ConfigurationError
from app.qstash.client.api import QStash

if TYPE_CHECKING:
    from collections.abc import Iterable

    from flask import Flask

    from app.qstash.client.models import PublishResult
    from app.qstash.client.options import Message

EXTENSION = "qstash.client"


class Publisher(Protocol):
    """What ``Job.enqueue`` needs: send one message or a batch. ``QStash`` and the stub."""

    def send(self, message: Message) -> PublishResult:
        """Publish one message."""
        ...

    def send_batch(self, messages: Iterable[Message]) -> list[PublishResult]:
        """Publish many messages in one call."""
        ...


def client_for(app: Flask) -> QStash:
    """Return the app's ``QStash`` client, creating it from the config on first use."""
    client = app.extensions.get(EXTENSION)
    if client is None:
        client = app.extensions.setdefault(EXTENSION, _from_config(app))
    if not isinstance(client, QStash):
        raise ConfigurationError(
            f"app.extensions[{EXTENSION!r}] is a {type(client).__name__}, not a QStash client"
            " (a stub queue only publishes; use the real client for this command)"
        )
    return client


def publisher_for(app: Flask) -> Publisher:
    """Return what publishes for ``app``: an installed stub queue, else its ``QStash`` client."""
    installed = app.extensions.get(EXTENSION)
    if installed is not None:
        publisher: Publisher = installed
        return publisher
    return client_for(app)


def current_publisher() -> Publisher:
    """Return the publisher of the current Flask app."""
    return publisher_for(current_app._get_current_object())  # type: ignore[attr-defined]


def _from_config(app: Flask) -> QStash:
    token = app.config.get("QSTASH_TOKEN")
    if not token:
        raise ConfigurationError(
            "QSTASH_TOKEN is not set: publishing needs the token from the Upstash console"
            " (or QSTASH_DEV=1 for the local dev server)"
        )
    return QStash(token, base_url=app.config.get("QSTASH_URL") or "https://qstash.upstash.io")
