"""app.qstash.timing's Retry-After / X-RateLimit-Reset reader against hostile values.

One reader serves the dev server, the stub queue, the webhook job and the email job: any
text in, a wait of 0 s to a day or None out, never an exception.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.qstash.timing import MAX_RETRY_DELAY, parse_retry_after, retry_after_seconds

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("7", 7.0),
        (" 12 ", 12.0),
        ("86400", 86400.0),
        ("86401", None),  # over a day: QStash falls back to its backoff
        ("0" * 63 + "5", 5.0),  # 64 characters: still read
        ("0" * 64 + "5", None),  # 65: ignored unread
        ("6m5s", 365.0),
        ("1d", 86400.0),
        ("1d1s", None),
        ("²", None),  # str.isdigit() says yes, int() says no
        ("١٢", None),  # Arabic-Indic digits: int() would read 12
        ("１２", None),  # full-width digits
        ("9" * 400, None),
        ("9" * 5000, None),  # past int()'s digit limit
        ("nan", None),
        ("NaN", None),
        ("inf", None),
        ("-5", None),
        ("+5", None),
        ("1e3", None),
        ("1_000", None),
        ("5.5", None),
        ("soon", None),
        ("", None),
        ("   ", None),
        ("Fri, 31 Dec 9999 23:59:59 GMT", None),
        ("Mon, 01 Jan 99999999999999999999 00:00:00 GMT", None),  # OverflowError inside
        ("Mon, 01 Jan 2020 00:00:00 +9999", None),  # offset out of range
        ("Mon, 32 Jan 2020 00:00:00 GMT", None),
        ("Tue, 14 Nov 2023 22:13:20 GMT", 0.0),  # NOW itself
        ("Tue, 14 Nov 2023 22:13:19 GMT", None),  # a second in the past
        ("Tue, 14 Nov 2023 22:14:20 GMT", 60.0),
    ],
)
def test_retry_after_values(value: str, expected: float | None) -> None:
    """Seconds, durations and HTTP dates within a day are read; anything else is None."""
    assert retry_after_seconds(value, None, NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("15", 15.0),
        ("15.5", 15.5),
        (str(int(NOW) + 20), 20.0),  # a unix timestamp in seconds
        (str(int(NOW + 30) * 1000), 30.0),  # in milliseconds
        ("nan", None),
        ("inf", None),
        ("1e10", None),
        ("-5", None),
        ("1_000", None),
        ("１２", None),
        ("9" * 400, None),
        (str(int(NOW) - 20), None),  # in the past
    ],
)
def test_rate_limit_reset_values(value: str, expected: float | None) -> None:
    """X-RateLimit-Reset is seconds from now or a unix timestamp; anything else is None."""
    assert retry_after_seconds(None, value, NOW) == expected


def test_an_unusable_retry_after_lets_the_reset_speak() -> None:
    """A Retry-After that means nothing does not hide a valid X-RateLimit-Reset."""
    assert retry_after_seconds("²", "42", NOW) == 42.0
    assert retry_after_seconds("7", "42", NOW) == 7.0


@pytest.fixture
def far_west() -> Iterator[None]:
    """Run with the host's zone 10 hours behind UTC."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "Etc/GMT+10")
        time.tzset()
        yield
    time.tzset()


def test_a_date_in_negative_zero_is_utc_whatever_the_hosts_zone(far_west: None) -> None:
    """RFC 5322's "-0000" (no zone known) is read as UTC, not as this host's local time."""
    assert retry_after_seconds("Tue, 14 Nov 2023 22:14:20 -0000", None, NOW) == 60.0


def test_parse_retry_after_reads_one_header() -> None:
    """The single-header helper is the same reader, measured from now by default."""
    assert parse_retry_after("30", now=NOW) == 30.0
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=100), usegmt=True)
    seconds = parse_retry_after(soon)
    assert seconds is not None and 95 <= seconds <= 100


DATES = st.builds(
    lambda when, offset: format_datetime(when.replace(tzinfo=timezone(offset))),
    st.datetimes(),
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)),
)
HEADERS = st.one_of(
    st.text(max_size=80),
    st.integers().map(str),
    st.floats().map(str),
    st.from_regex(r"\A[0-9]{0,30}[dhms]?[0-9]{0,5}[dhms]?\Z"),
    DATES,
    DATES.map(lambda date: date.replace("0", "٠")),
)


@settings(max_examples=500)
@given(retry_after=st.none() | HEADERS, reset=st.none() | HEADERS, now=st.floats(0, 4e9))
def test_any_header_gives_a_bounded_wait_or_none(
    retry_after: str | None, reset: str | None, now: float
) -> None:
    """Whatever the endpoint sends, the answer is None or a number in [0, one day]."""
    seconds = retry_after_seconds(retry_after, reset, now)
    assert seconds is None or 0 <= seconds <= MAX_RETRY_DELAY
