"""QStash's wire facts a receiver needs besides the signature: pure, no web framework.

- ``489`` + ``Upstash-NonRetryable-Error: true`` sends a message straight to the DLQ;
- ``Upstash-Retried`` counts earlier attempts (unsigned: read defensively);
- the URL QStash signs is the public one it called: ``APP_URL`` + path (+ query), never
  the ``Host`` header a caller may set.
"""

from __future__ import annotations

import functools
from urllib.parse import quote

__all__ = [
    "MAX_RETRIED",
    "NON_RETRYABLE_HEADER",
    "NON_RETRYABLE_STATUS",
    "public_url",
    "retried_count",
]

NON_RETRYABLE_STATUS = 489
NON_RETRYABLE_HEADER = "Upstash-NonRetryable-Error"
# RFC 3986 characters that may appear unescaped in a path.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"

#: The highest ``Upstash-Retried`` read (the dev server's cap on retries too). The header
#: is not signed: bounded, ``2 ** retried`` and ``exp(2.5 * retried)`` stay finite floats.
MAX_RETRIED = 100
# More digits than this (leading zeros aside) is past MAX_RETRIED whatever they say.
_RETRIED_DIGITS = len(str(MAX_RETRIED))


def retried_count(raw: str | None) -> int:
    """Read ``Upstash-Retried``: ASCII digits, capped at MAX_RETRIED; anything else is 0."""
    if raw is None:
        return 0
    digits = raw.strip()
    # isdigit() alone also takes "³" and "٣", which int() reads as numbers.
    if not (digits.isascii() and digits.isdigit()):
        return 0
    digits = digits.lstrip("0")
    if len(digits) > _RETRIED_DIGITS:
        return MAX_RETRIED
    return min(int(digits or "0"), MAX_RETRIED)


# Job endpoints are few, so their URLs are built once; varied query strings can only
# cycle this bounded cache.
@functools.lru_cache(maxsize=512)
def public_url(app_url: str, path: str, query: bytes) -> str:
    """Return ``app_url`` + ``path`` (percent-encoded as QStash does) + ``?query``."""
    url = app_url.rstrip("/") + quote(path, safe=_PATH_SAFE)
    if query:
        url += "?" + query.decode("latin-1")
    return url
