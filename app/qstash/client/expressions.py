"""Publish options checked before anything is sent: durations and retry-delay expressions.

QStash rejects a bad ``Upstash-Delay`` or ``Upstash-Retry-Delay`` only when it receives
the message; checking here turns that into a ``ValueError`` at the call site. The rules
themselves (duration syntax, the expression whitelist) live in ``app.qstash.timing`` and
``app.qstash.retry_delay``, shared with the stub queue and the dev server.
"""

from __future__ import annotations

import ast
import math
from datetime import timedelta

from app.qstash import retry_delay
from app.qstash.timing import MAX_DURATION, DurationError, parse_duration

Duration = int | float | timedelta | str


def duration_seconds(value: Duration, *, name: str = "delay") -> int:
    """Return ``value`` (seconds, ``timedelta`` or ``"1d10h30m"``) as whole seconds >= 0.

    Strings are read by :func:`app.qstash.timing.parse_duration`, with units (QStash's
    headers want them); numbers are rounded up. Anything else, or more than
    ``MAX_DURATION`` seconds, raises ``DurationError`` (a ``ValueError``) naming ``name``.
    """
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        # Compared, never converted: 10**5000 is refused without an OverflowError.
        if not 0 <= value <= MAX_DURATION:
            raise DurationError(
                f"{name} must be from 0 to {MAX_DURATION} seconds, not {shown(value)}"
            )
        return math.ceil(value)
    if isinstance(value, str):
        try:
            return parse_duration(value, bare_seconds=False)
        except DurationError as exc:
            raise DurationError(f"{name} {exc}") from None
    raise DurationError(
        f"{name} must be seconds, a timedelta or a string like '5m', not {shown(value)}"
    )


def shown(value: object) -> str:
    """Return ``value`` for an error message: short, and never failing (``10**5000``)."""
    if isinstance(value, int) and not -(10**20) < value < 10**20:
        return "a number of more than 20 digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def duration_header(value: Duration, *, name: str = "delay") -> str:
    """Return ``value`` as QStash's header text: strings as given, numbers as ``"{n}s"``."""
    seconds = duration_seconds(value, name=name)
    return value.strip(" \t") if isinstance(value, str) else f"{seconds}s"


def parse_retry_delay(expression: str) -> ast.Expression:
    """Validate a retry-delay expression and return its syntax tree."""
    if not isinstance(expression, str):
        raise ValueError(f"retry_delay must be an expression string, not {expression!r}")
    try:
        return retry_delay.parse(expression)
    except retry_delay.RetryDelayError as exc:
        raise ValueError(f"retry_delay: {exc}") from None
