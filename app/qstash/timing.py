"""Durations and delays as QStash spells them, and QStash's default backoff.

``Upstash-Delay``/``Upstash-Timeout`` durations (``10s``, ``5m``, ``1d10h30m``), the
endpoint's ``Retry-After`` (seconds, HTTP date or duration) and ``X-RateLimit-Reset``, and
``min(86400, e^(2.5·n))``: all in seconds.
"""

from __future__ import annotations

import math
import re
from email.utils import parsedate_to_datetime

from app.qstash import retry_delay

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNITS = (86400, 3600, 60, 1)
#: QStash caps every retry delay at one day.
MAX_RETRY_DELAY = 86400.0


class DurationError(ValueError):
    """The text is not a QStash duration."""


def parse_duration(text: str, *, bare_seconds: bool = True) -> int:
    """Return the seconds of a QStash duration like ``"1d10h30m"`` (or a bare ``"30"``)."""
    raw = text.strip()
    if raw.isdigit() and bare_seconds:
        return int(raw)
    match = _DURATION.fullmatch(raw)
    if not raw or match is None or not any(match.groups()):
        raise DurationError(
            f"invalid duration {text!r}: use a number of seconds or units like 10s, 5m, 1h, 1d"
        )
    return sum(int(part or 0) * unit for part, unit in zip(match.groups(), _UNITS, strict=True))


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
    """Return the wait an endpoint asked for, or None; over a day means "use the default"."""
    for raw, parse in ((retry_after, _parse_retry_after), (rate_limit_reset, _parse_reset)):
        if raw:
            seconds = parse(raw.strip(), now)
            if seconds is not None and 0 <= seconds <= MAX_RETRY_DELAY:
                return seconds
    return None


def _parse_retry_after(raw: str, now: float) -> float | None:
    try:
        return float(parse_duration(raw))
    except DurationError:
        pass
    try:
        return parsedate_to_datetime(raw).timestamp() - now
    except (TypeError, ValueError, IndexError):
        return None


def _parse_reset(raw: str, now: float) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    # A unix timestamp (seconds or milliseconds) or a number of seconds from now.
    if value > 1e12:
        return value / 1000 - now
    return value - now if value > 1e9 else value
