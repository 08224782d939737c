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
from app.qstash.timing import DurationError, parse_duration

Duration = int | float | timedelta | str


def duration_seconds(value: Duration, *, name: str = "delay") -> int:
    """Return ``value`` (seconds, ``timedelta`` or ``"1d10h30m"``) as whole seconds >= 0."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be seconds, a timedelta or a string like '5m', not a bool")
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value!r}")
        return math.ceil(value)
    if isinstance(value, str):
        try:
            # QStash's headers want units; a bare "30" is only accepted in Retry-After.
            return parse_duration(value, bare_seconds=False)
        except DurationError:
            raise ValueError(
                f"{name} {value!r} is not a duration: use d, h, m and s in that order,"
                " like '1d10h30m'"
            ) from None
    raise ValueError(f"{name} must be seconds, a timedelta or a string like '5m', not {value!r}")


def duration_header(value: Duration, *, name: str = "delay") -> str:
    """Return ``value`` as QStash's header text: strings as given, numbers as ``"{n}s"``."""
    seconds = duration_seconds(value, name=name)
    return value.strip() if isinstance(value, str) else f"{seconds}s"


def parse_retry_delay(expression: str) -> ast.Expression:
    """Validate a retry-delay expression and return its syntax tree."""
    if not isinstance(expression, str):
        raise ValueError(f"retry_delay must be an expression string, not {expression!r}")
    try:
        return retry_delay.parse(expression)
    except retry_delay.RetryDelayError as exc:
        raise ValueError(f"retry_delay: {exc}") from None
