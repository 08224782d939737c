"""Durations and delays as QStash spells them, and QStash's default backoff.

``Upstash-Delay``/``Upstash-Timeout`` durations (``10s``, ``5m``, ``1d10h30m``), the
endpoint's ``Retry-After`` (seconds, HTTP date or duration) and ``X-RateLimit-Reset``, and
``min(86400, e^(2.5·n))``: all in seconds.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

from app.qstash import retry_delay

# ASCII digits only: ``\d`` would take any script's digits, which QStash refuses.
_DURATION = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
_UNITS = (86400, 3600, 60, 1)
#: The longest duration QStash can hold, in seconds (about 292 years). Its server is
#: written in Go: a duration is a signed 64-bit count of nanoseconds, and a longer one
#: is refused ("time: invalid duration").
MAX_DURATION = (2**63 - 1) // 10**9
#: Longer texts are refused unread (the longest sensible duration has under 20 characters).
MAX_DURATION_CHARS = 64
#: Around a duration: HTTP's optional whitespace, stripped from header values anyway.
_OWS = " \t"
#: QStash caps every retry delay at one day.
MAX_RETRY_DELAY = 86400.0


class DurationError(ValueError):
    """The text is not a QStash duration."""


def parse_duration(text: str, *, bare_seconds: bool = True) -> int:
    """Return the seconds of a QStash duration like ``"1d10h30m"`` (or a bare ``"30"``).

    The one duration parser of this code base. QStash documents ``Upstash-Delay`` and
    ``Upstash-Timeout`` as whole numbers with units ``d``, ``h``, ``m``, ``s``, combined
    largest first (``50s``, ``10h``, ``1d10h30m``); that is what is accepted, in ASCII
    digits, with spaces or tabs around it. A bare number of seconds (``Retry-After``)
    only with ``bare_seconds``: QStash refuses one in its own headers ("missing unit in
    duration"). Anything else, or longer than ``MAX_DURATION``, raises ``DurationError``
    saying why; no other exception is raised, whatever ``text`` is.
    """
    if not isinstance(text, str):
        raise DurationError(f"{type(text).__name__} is not a duration: use text like '5m'")
    raw = text.strip(_OWS)
    if len(raw) > MAX_DURATION_CHARS:
        raise DurationError(
            f"{raw[:20]!r}... is not a duration: {len(raw)} characters,"
            f" the most is {MAX_DURATION_CHARS}"
        )
    match = _DURATION.fullmatch(raw)
    if bare_seconds and raw.isascii() and raw.isdigit():
        seconds = int(raw)
    elif raw and match is not None:
        seconds = sum(
            int(part or 0) * unit for part, unit in zip(match.groups(), _UNITS, strict=True)
        )
    else:
        bare = "a number of seconds, or " if bare_seconds else ""
        raise DurationError(
            f"{raw!r} is not a duration: use {bare}whole numbers with the units d, h, m"
            " and s, largest first, like '30s', '5m', '1h30m' or '1d10h30m'"
        )
    if seconds > MAX_DURATION:
        raise DurationError(
            f"{raw!r} is longer than QStash's longest duration, {MAX_DURATION} s (292 years)"
        )
    return seconds


def default_backoff(retried: int) -> float:
    """Return QStash's default delay before retry number ``retried`` (1 = the first retry)."""
    return min(MAX_RETRY_DELAY, math.exp(2.5 * retried))


def retry_delay_seconds(expression: str | None, retried: int) -> float:
    """Return the delay after the attempt that carried ``Upstash-Retried: retried``."""
    if expression:
        try:
            return retry_delay.evaluate(expression, retried) / 1000
        except retry_delay.RetryDelayError:
            pass  # validated at publish time; a runtime math error falls back
    return default_backoff(retried + 1)


def retry_after_seconds(
    retry_after: str | None, rate_limit_reset: str | None, now: float
) -> float | None:
    """Return the wait an endpoint asked for, or None; over a day means "use the default".

    The one reader of ``Retry-After`` and ``X-RateLimit-Reset`` in this code base. Any
    text is accepted and none raises: what is not a valid, finite wait between 0 and a
    day (non-ASCII digits, NaN, negative, 400 nines, a date in year 9999) is None.
    """
    for raw, parse in ((retry_after, _parse_retry_after), (rate_limit_reset, _parse_reset)):
        text = (raw or "").strip()
        if text and len(text) <= _MAX_HEADER_CHARS and text.isascii():
            seconds = parse(text, now)
            if seconds is not None and 0 <= seconds <= MAX_RETRY_DELAY:
                return seconds
    return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Return the seconds one ``Retry-After`` value asks to wait (0 to a day), or None."""
    return retry_after_seconds(value, None, time.time() if now is None else now)


#: Longer header values are no wait QStash honours (a day is 5 digits, an HTTP date 29
#: characters): they are ignored unread, so no header costs more than a glance.
_MAX_HEADER_CHARS = 64
_TIMESTAMP = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def _parse_retry_after(raw: str, now: float) -> float | None:
    try:  # seconds ("120"), or a duration ("2m")
        return float(parse_duration(raw))
    except DurationError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, whatever this host's zone is
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - now


def _parse_reset(raw: str, now: float) -> float | None:
    if not _TIMESTAMP.fullmatch(raw):
        return None
    value = float(raw)
    # A unix timestamp (seconds or milliseconds) or a number of seconds from now.
    if value > 1e12:
        return value / 1000 - now
    return value - now if value > 1e9 else value
