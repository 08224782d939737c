"""Sending a rendered email: Resend through its official SDK, or a local ``.eml`` outbox.

``mail_backend(app)`` picks ``ResendBackend`` when ``RESEND_API_KEY`` is set, else
``OutboxBackend`` writing ``<EMAIL_OUTBOX or instance/outbox>/<message id>.eml``.

Resend: the QStash message id is the ``Idempotency-Key``, so a redelivered message cannot
send twice. The SDK's default HTTP client (requests, no session) opens a connection and a
TLS handshake per email; ``PooledHTTPClient`` keeps one pooled httpx client per process
and is installed through the SDK's documented ``resend.default_http_client`` hook. The
SDK (about 7 MiB and 220 modules a process) is imported only when Resend is used: by
``mail_backend`` when ``RESEND_API_KEY`` is set (send-email asks at start-up, so that a
preloading server's workers share it).
Outcomes: 429 and 5xx → retry (``RetryLater`` when Resend says ``Retry-After``, else a
502 so QStash backs off); validation errors and other 4xx → ``NonRetryableError``; a
missing or invalid API key → retry (it is our configuration, not the message).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import httpx

from app.errors import NonRetryableError, RetryLater
from app.outbound import UpstreamError
from app.qstash.timing import parse_retry_after

if TYPE_CHECKING:
    import resend
    from flask import Flask
    from resend.exceptions import ResendError

_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]{1,200}")
_CONFIG_ERRORS = {"missing_api_key", "invalid_api_key", "restricted_api_key"}


@dataclass(frozen=True)
class Message:
    """A rendered email, ready for a backend."""

    sender: str
    to: str
    subject: str
    html: str
    text: str
    #: The QStash message id: Resend's idempotency key, the outbox file name.
    message_id: str | None = None


@dataclass(frozen=True)
class Sent:
    """What a backend did with a message."""

    backend: str
    id: str


class MailBackend(Protocol):
    """Somewhere a ``Message`` can be sent."""

    def send(self, message: Message) -> Sent:
        """Send ``message``; raise ``JobError``/``UpstreamError`` to steer QStash."""
        ...


def _file_stem(message_id: str | None) -> str:
    if message_id is None:
        return f"local_{uuid.uuid4().hex}"
    if _SAFE_ID.fullmatch(message_id) and not message_id.startswith("."):
        return message_id
    return "id_" + hashlib.sha256(message_id.encode()).hexdigest()[:32]


def to_mime(message: Message) -> EmailMessage:
    """Return ``message`` as a multipart/alternative MIME message (text, then HTML)."""
    mime = EmailMessage(policy=SMTP)
    mime["From"] = message.sender
    mime["To"] = message.to
    mime["Subject"] = message.subject
    mime["Date"] = formatdate(usegmt=True)
    mime["Message-ID"] = f"<{_file_stem(message.message_id)}@qstash-jobs.invalid>"
    mime.set_content(message.text)
    mime.add_alternative(message.html, subtype="html")
    return mime


class OutboxBackend:
    """Write each email as ``<message id>.eml``; a redelivery overwrites its file."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def send(self, message: Message) -> Sent:
        """Write the ``.eml`` atomically and return its file name."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{_file_stem(message.message_id)}.eml"
        fd, temp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(to_mime(message).as_bytes())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return Sent("outbox", path.name)


class PooledHTTPClient:
    """The Resend SDK's HTTP client interface over one pooled httpx client.

    Registered as a ``resend.HTTPClient`` by ``load_sdk()``, not a subclass: defining it
    does not import the SDK.
    """

    def __init__(self, client: httpx.Client | None = None) -> None:
        self.client = client or httpx.Client(timeout=httpx.Timeout(15.0, connect=5.0))
        self.pid = os.getpid()

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        json: dict[str, object] | list[object] | None = None,
        files: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        """Send one request through the pool; return (body, status, headers)."""
        try:
            response = self.client.request(
                method,
                url,
                headers=headers,
                json=json if files is None and data is None else None,
                files=files,
                data=data,
            )
        except httpx.HTTPError as exc:
            # The SDK wraps any exception as a ResendError with code 500: a retry.
            raise RuntimeError(f"request to Resend failed: {exc}") from exc
        return response.content, response.status_code, response.headers

    def close(self) -> None:
        """Close the pooled connections."""
        self.client.close()


@functools.cache
def load_sdk() -> str:
    """Import the SDK, once, and register ``PooledHTTPClient`` as its ``HTTPClient``.

    Return the API URL the SDK read at import: RESEND_API_URL's or Resend's own.
    """
    import resend

    resend.HTTPClient.register(PooledHTTPClient)
    return resend.api_url


def install_pooled_client() -> None:
    """Make the SDK use a pooled client of this process, unless the app installed its own."""
    load_sdk()
    import resend

    current = resend.default_http_client
    if isinstance(current, PooledHTTPClient) and current.pid == os.getpid():
        return
    # Replace the SDK's own default, and a pooled client inherited through fork() (it would
    # share sockets with the parent); a client the app installed itself is left alone.
    if type(current) is resend.RequestsClient or isinstance(current, PooledHTTPClient):
        resend.default_http_client = cast("resend.HTTPClient", PooledHTTPClient())


class ResendBackend:
    """Send through the official ``resend`` SDK, the message id as idempotency key."""

    def __init__(self, api_key: str, api_url: str | None = None) -> None:
        # The first backend, made at start-up (jobs.email.init_app), imports the SDK
        # before gunicorn's preloading master forks: every worker shares it.
        sdk_url = load_sdk()
        self.api_key = api_key
        self.api_url = api_url or sdk_url

    def send(self, message: Message) -> Sent:
        """Send one email; map Resend's errors to QStash outcomes."""
        import resend
        from resend.exceptions import ResendError

        resend.api_key = self.api_key
        resend.api_url = self.api_url
        install_pooled_client()
        params: resend.Emails.SendParams = {
            "from": message.sender,
            "to": [message.to],
            "subject": message.subject,
            "html": message.html,
            "text": message.text,
        }
        options: resend.Emails.SendOptions = {}
        if message.message_id:
            options["idempotency_key"] = message.message_id
        try:
            response = resend.Emails.send(params, options)
        except ResendError as exc:
            raise resend_outcome(exc) from None
        return Sent("resend", str(response["id"]))


def resend_outcome(exc: ResendError) -> Exception:
    """Return the exception that tells QStash what to do after a Resend error."""
    try:
        status = int(exc.code)
    except (TypeError, ValueError):
        status = 500
    detail = f"Resend answered {status} {exc.error_type}: {exc.message}"
    if status == 429 or status >= 500:
        headers = {name.lower(): value for name, value in (exc.headers or {}).items()}
        after = parse_retry_after(headers.get("retry-after"))
        if after is not None:
            return RetryLater(detail, after=after)
        return UpstreamError(detail)
    if exc.error_type in _CONFIG_ERRORS:
        return UpstreamError(f"{detail} (check RESEND_API_KEY)")
    if status == 409 and exc.error_type == "concurrent_idempotent_requests":
        return RetryLater(detail, after=1)
    return NonRetryableError(detail, errors={"resend": {"status": status, "type": exc.error_type}})


def outbox_folder(app: Flask) -> Path:
    """Return the folder of ``.eml`` files: ``EMAIL_OUTBOX``, else ``<instance>/outbox``."""
    return Path(app.config.get("EMAIL_OUTBOX") or Path(app.instance_path) / "outbox")


def mail_backend(app: Flask) -> MailBackend:
    """Return Resend when RESEND_API_KEY is set (the SDK is imported then), else the outbox."""
    config = app.config
    if config.get("RESEND_API_KEY"):
        return ResendBackend(config["RESEND_API_KEY"], config.get("RESEND_API_URL"))
    return OutboxBackend(outbox_folder(app))
