"""Credentials out of URLs before they are shown: messages, logs, the dashboard, digests.

A destination such as ``https://user:token@hooks.example/x`` carries its credentials in
the userinfo. ``redact_url`` replaces it by ``***`` wherever a URL is formatted for
people to read; ``scrub`` removes the same secrets from any text (an exception's
message) that may have copied them. The request itself still uses the real URL.

Both take any string, URL or not, and never raise: what is shown is often exactly the
malformed input that could not be parsed.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

#: ``scheme:`` then any slashes (``http:/x`` and ``http:\\x`` are read as authorities by
#: browsers and some parsers), then the authority up to the path, query or fragment.
_AUTHORITY = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*:)?[/\\]*(?P<authority>[^/\\?#]*)")
MASK = "***"


def _userinfo(url: str) -> tuple[int, int] | None:
    match = _AUTHORITY.match(url)
    if match is None:  # never: every part of the pattern is optional
        return None
    start = match.start("authority")
    at = match.group("authority").rfind("@")
    return None if at < 0 else (start, start + at)


def redact_url(url: str) -> str:
    """Return ``url`` with its userinfo (``user:password``) replaced by ``***``."""
    span = _userinfo(url)
    if span is None:
        return url
    start, end = span
    return url[:start] + MASK + url[end:]


def scrub(text: str, url: str) -> str:
    """Return ``text`` with the credentials of ``url`` (as typed or decoded) masked."""
    span = _userinfo(url)
    if span is None:
        return text
    userinfo = url[span[0] : span[1]]
    _, _, password = userinfo.partition(":")
    secrets = {userinfo, unquote(userinfo), password, unquote(password)} - {""}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
