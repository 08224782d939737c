"""Durations, Retry-After and QStash's default backoff."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from app.qstash.timing import (
    DurationError,
    default_backoff,
    parse_duration,
    retry_after_seconds,
    retry_delay_seconds,
)

NOW = 1_700_000_000


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("5m", 300), ("1h", 3600), ("1d10h30m", 124200), ("30", 30), ("0s", 0)],
)
def test_durations_parse_like_qstash(text: str, seconds: int) -> None:
    """QStash durations combine d, h, m and s units; a bare number is seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "1.5s", "s", "-5s", "10s5m"])
def test_bad_durations_are_refused(text: str) -> None:
    """Anything else raises DurationError."""
    with pytest.raises(DurationError):
        parse_duration(text)


def test_default_backoff_matches_qstash_table() -> None:
    """Backoff before retry n is min(86400, e^(2.5 n)): 12 s, 2 m 28 s, 30 m 8 s, 6 h 7 m, 24 h."""
    assert [round(default_backoff(n)) for n in range(1, 6)] == [12, 148, 1808, 22026, 86400]


def test_retry_delay_expression_replaces_default_backoff() -> None:
    """With an expression, retried=0 after the first attempt; without, the default."""
    assert retry_delay_seconds("pow(2, retried) * 1000", 0) == 1.0
    assert retry_delay_seconds(None, 0) == pytest.approx(12.18, abs=0.01)


@pytest.mark.parametrize(
    ("retry_after", "reset", "expected"),
    [
        ("7", None, 7.0),
        ("6m5s", None, 365.0),
        (formatdate(NOW + 30, usegmt=True), None, 30.0),
        (None, str(NOW + 20), 20.0),
        (None, "15", 15.0),
        ("200000", None, None),  # over a day: the default applies
        ("soon", None, None),
    ],
)
def test_retry_after_forms(
    retry_after: str | None, reset: str | None, expected: float | None
) -> None:
    """Retry-After in seconds, duration or HTTP date, and X-RateLimit-Reset, are honoured."""
    assert retry_after_seconds(retry_after, reset, now=NOW) == expected
