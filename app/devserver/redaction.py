"""``Upstash-Redact-Fields``: what the API shows as ``REDACTED:<SHA256>``, never delivered so.

A publish (or schedule) may ask QStash to hide its body, all its headers or named headers
wherever it shows the message: ``body``, ``header`` (all; the docs' ``headers`` too) and
``header[Name]``, comma-separated, as both official SDKs send them. The message keeps its
original values: deliveries, retries, DLQ retries and schedule firings send them. What
the API shows (messages, events, DLQ, schedules) is the SHA-256 of the value as it was
sent (the body's bytes, the header's Latin-1 bytes) in lowercase hex, the form QStash's
console shows: ``REDACTED:45db9213…``. The events keep only that form, not the body.

The parsed option is stored in the message spec as ``"redact": {"body": true,
"headers": true | ["Authorization", …]}`` and travels with it (DLQ entries, schedules,
callbacks).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

HEADER = "Upstash-Redact-Fields"
PREFIX = "REDACTED:"
#: RFC 9110 field-name token, as in a header name.
_NAMED = re.compile(r"headers?\[([!#$%&'*+.^_`|~0-9A-Za-z-]+)\]", re.IGNORECASE)


def parse(raw: str | None) -> dict[str, Any] | None:
    """Return the ``redact`` spec of an ``Upstash-Redact-Fields`` value, None if it names
    nothing; raise ``ValueError`` naming the part that is none of the known fields."""
    if raw is None:
        return None
    body, every, named = False, False, []
    for part in raw.split(","):
        field = part.strip()
        match = _NAMED.fullmatch(field)
        if not field:
            continue  # a trailing or doubled comma names nothing
        if field.lower() == "body":
            body = True
        elif field.lower() in ("header", "headers"):
            every = True
        elif match is not None:
            named.append(match.group(1))
        else:
            raise ValueError(
                f"invalid {HEADER} part {field!r}: expected body, header (all headers)"
                " or header[Name]"
            )
    headers: bool | list[str] = True if every else list(dict.fromkeys(named))
    if not body and not headers:
        return None
    spec: dict[str, Any] = {}
    if body:
        spec["body"] = True
    if headers:
        spec["headers"] = headers
    return spec


def digest(raw: bytes) -> str:
    """Return ``REDACTED:`` and the lowercase hex SHA-256 of ``raw``."""
    return PREFIX + hashlib.sha256(raw).hexdigest()


def body(raw: bytes, redact: dict[str, Any] | None) -> bytes:
    """Return the body as the API shows it: ``REDACTED:<sha256>`` if redacted (and not empty)."""
    if not redact or not redact.get("body") or not raw:
        return raw
    return digest(raw).encode("ascii")


def headers(sent: dict[str, str], redact: dict[str, Any] | None) -> dict[str, str]:
    """Return the headers as the API shows them, the redacted ones' values as digests."""
    wanted = (redact or {}).get("headers")
    if not wanted:
        return sent
    names = None if wanted is True else {name.lower() for name in wanted}
    return {
        name: digest(value.encode("latin-1", "replace"))
        if names is None or name.lower() in names
        else value
        for name, value in sent.items()
    }
