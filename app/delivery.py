"""``Delivery``: one delivery attempt of a QStash message, as a job handler sees it.

Built by the receiver (``app.receiver``) from the verified request; handlers take it as
their second argument, tests build one directly (``app.testing.make_delivery``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from werkzeug.datastructures import Headers

from app.qstash.protocol import retried_count

if TYPE_CHECKING:
    from werkzeug import Request

__all__ = ["Delivery"]

# Headers QStash or the HTTP stack add; everything else on a delivery was forwarded by
# the publisher (``Upstash-Forward-X: v`` arrives as ``X: v``).
_TRANSPORT_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "user-agent",
        "accept",
        "accept-encoding",
        "connection",
        "transfer-encoding",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-real-ip",
        "forwarded",
        "via",
    }
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery attempt of a QStash message, as the endpoint received it.

    Only the body and URL are covered by the signature; the ``Upstash-*`` headers read
    here (message id, retried, …) are QStash's word, not signed facts.
    """

    message_id: str | None
    retried: int
    schedule_id: str | None
    caller_ip: str | None
    topic_name: str | None
    region: str | None
    #: The raw body, byte for byte as signed.
    body: bytes
    #: The public URL this delivery was verified against (the token's ``sub``).
    url: str
    job: str | None = None
    #: False only for unsigned calls accepted under FLASK_DEBUG + QSTASH_ALLOW_UNSIGNED.
    verified: bool = True
    claims: Mapping[str, Any] = field(default_factory=dict)
    #: Every header of the request, as received.
    request_headers: Headers = field(default_factory=Headers, repr=False)

    @property
    def attempt(self) -> int:
        """The 1-based attempt number (``retried`` + 1)."""
        return self.retried + 1

    @property
    def headers(self) -> dict[str, str]:
        """Return the headers the publisher forwarded (``Upstash-Forward-X`` arrives as X)."""
        return {
            name: value
            for name, value in self.request_headers.items()
            if name.lower() not in _TRANSPORT_HEADERS and not name.lower().startswith("upstash-")
        }

    @classmethod
    def from_request(
        cls,
        req: Request,
        *,
        body: bytes,
        url: str,
        job: str | None,
        claims: Mapping[str, Any] | None,
    ) -> Delivery:
        """Build a ``Delivery`` from an incoming request's QStash headers."""
        # Read straight from the WSGI environ: this runs on every delivery, and six
        # EnvironHeaders look-ups cost more than the rest of the Delivery together.
        environ = req.environ
        return cls(
            message_id=environ.get("HTTP_UPSTASH_MESSAGE_ID"),
            retried=retried_count(environ.get("HTTP_UPSTASH_RETRIED")),
            schedule_id=environ.get("HTTP_UPSTASH_SCHEDULE_ID"),
            caller_ip=environ.get("HTTP_UPSTASH_CALLER_IP"),
            topic_name=environ.get("HTTP_UPSTASH_TOPIC_NAME"),
            region=environ.get("HTTP_UPSTASH_REGION"),
            body=body,
            url=url,
            job=job,
            verified=claims is not None,
            claims=claims or {},
            request_headers=req.headers,
        )
