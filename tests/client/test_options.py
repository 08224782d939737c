"""Publish options are validated before anything is sent: bad input is a clear ValueError."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.qstash.client import FlowControl, Message, PublishOptions
from app.qstash.client.expressions import (
    duration_header,
    duration_seconds,
    parse_retry_delay,
    shown,
)
from app.qstash.timing import MAX_DURATION, DurationError


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(0, 0), (90, 90), (1.2, 2), (timedelta(hours=1), 3600), ("10s", 10), ("5m", 300),
     ("1d10h30m", 124200), ("2h", 7200)],
)  # fmt: skip
def test_durations_in_every_form(value: object, seconds: int) -> None:
    """Seconds, timedeltas and '1d10h30m' strings all become whole seconds."""
    assert duration_seconds(value) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    ["10x", "m5", "5m10h", "", " ", "1.5h", "30", -1, -0.5, True, None, [1], b"5m",
     float("nan"), float("inf"), pytest.param(10**5000, id="10**5000"), MAX_DURATION + 1,
     timedelta.max, -timedelta(1)],
)  # fmt: skip
def test_bad_durations_are_refused(value: object) -> None:
    """A duration QStash would not understand is a ValueError naming the option: a bare
    "30" (QStash answers "missing unit"), NaN, and more than QStash's 292 years included."""
    with pytest.raises(DurationError, match="^delay"):
        duration_seconds(value)  # type: ignore[arg-type]


def test_a_huge_number_is_refused_without_printing_it() -> None:
    """10**5000 is refused with a short message, not an OverflowError or a 5000-digit one."""
    with pytest.raises(DurationError) as refused:
        duration_seconds(10**5000, name="timeout")
    assert "more than 20 digits" in str(refused.value) and len(str(refused.value)) < 200


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.integers(-(10**30), 10**30),
        st.floats(allow_nan=True, allow_infinity=True),
        st.timedeltas(),
        st.text(max_size=40),
        st.booleans(),
        st.none(),
        st.lists(st.integers(), max_size=2),
        st.binary(max_size=5),
    )
)
def test_any_value_is_whole_seconds_in_range_or_a_duration_error(value: object) -> None:
    """Whatever a caller passes, the answer is 0..MAX_DURATION seconds or DurationError."""
    try:
        seconds = duration_seconds(value)  # type: ignore[arg-type]
    except DurationError:
        return
    assert isinstance(seconds, int) and 0 <= seconds <= MAX_DURATION


def test_the_longest_duration_is_accepted_as_a_number() -> None:
    """MAX_DURATION seconds itself is a valid duration; what is not a duration says so."""
    assert duration_seconds(MAX_DURATION) == MAX_DURATION
    assert duration_seconds(float(MAX_DURATION - 1)) == MAX_DURATION - 1
    with pytest.raises(DurationError) as refused:
        duration_header([1])  # type: ignore[arg-type]
    assert str(refused.value) == (
        "delay must be seconds, a timedelta or a string like '5m', not [1]"
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [(10**20 - 1, repr(10**20 - 1)), (10**20, "a number of more than 20 digits"),
     (-(10**20) + 1, repr(-(10**20) + 1)), (-(10**20), "a number of more than 20 digits"),
     ("x" * 58, repr("x" * 58)), ("x" * 59, "'" + "x" * 56 + "..."), (None, "None")],
)  # fmt: skip
def test_values_in_errors_are_shown_short(value: object, text: str) -> None:
    """Error messages show a value as its repr up to 60 characters, never a huge number."""
    assert shown(value) == text


def test_duration_header_sends_strings_without_the_spaces_around_them() -> None:
    """The header carries the duration as written, minus spaces and tabs around it."""
    assert duration_header(" 1h30m\t", name="timeout") == "1h30m"
    assert duration_header(90.2) == "91s"


def test_duration_header_keeps_strings_and_suffixes_numbers() -> None:
    """Strings go out as written; numbers as '{n}s', as the official SDKs send them."""
    assert (duration_header("1d10h30m"), duration_header(timedelta(minutes=2))) == (
        "1d10h30m",
        "120s",
    )


@pytest.mark.parametrize(
    "expression",
    ["1000", "pow(2, retried) * 1000", "max(10, min(60000, exp(retried)))",
     "1000 * (1 + retried)", "floor(sqrt(retried)) + ceil(abs(-1.5)) + round(2.4) % 3"],
)  # fmt: skip
def test_valid_retry_delays_are_accepted(expression: str) -> None:
    """QStash's documented retry-delay expressions pass validation."""
    parse_retry_delay(expression)


@pytest.mark.parametrize(
    "expression",
    ["__import__('os').system('id')", "retried.__class__", "open('x')", "pow(2,", "lambda: 1",
     "retried ** 2", "x + 1", "'1000'", "", "1" * 300, "max(a=1)", "[1][0]"],
)  # fmt: skip
def test_unsafe_or_invalid_retry_delays_are_refused(expression: str) -> None:
    """Anything beyond numbers, 'retried', arithmetic and the nine functions is refused."""
    with pytest.raises(ValueError, match="retry_delay"):
        parse_retry_delay(expression)


def test_not_before_accepts_aware_naive_and_unix() -> None:
    """not_before datetimes (naive = UTC) and unix seconds all become unix seconds."""
    aware = datetime(2030, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    for value in (aware, datetime(2030, 1, 1), 1893456000):
        headers = PublishOptions(not_before=value).headers_dict()
        assert headers["Upstash-Not-Before"] == "1893456000"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"callback": "ftp://x.example/cb"}, "callback"),
        ({"failure_callback": "/relative"}, "failure_callback"),
        ({"retries": -1}, "retries"),
        ({"retries": "3"}, "retries"),
        ({"method": "TRACE"}, "method"),
        ({"headers": {"Bad Name": "x"}}, "header name"),
        ({"headers": {"X-Ok": "a\r\nInjected: 1"}}, "header X-Ok"),
        ({"label": "two\nlines"}, "label"),
        ({"not_before": "tomorrow"}, "not_before"),
        ({"timeout": "forever"}, "timeout"),
        ({"flow_control": {"key": "k"}}, "FlowControl"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], message: str) -> None:
    """Each invalid option is a ValueError that names it."""
    with pytest.raises(ValueError, match=message):
        PublishOptions(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "flow", [{"key": "k"}, {"key": "bad key", "rate": 1}, {"key": "k", "parallelism": 0}]
)
def test_bad_flow_control_is_refused(flow: dict[str, object]) -> None:
    """Flow control needs a valid key and a positive parallelism or rate."""
    with pytest.raises(ValueError, match="flow control"):
        FlowControl(**flow)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("destination", "queue"),
    [("javascript:alert(1)", None), ("https://", None), ("a b", None),
     ("https://x.example/a#part", None), ("https://x.example/a", "bad/queue")],
)  # fmt: skip
def test_bad_destinations_and_queues_are_refused(destination: str, queue: str | None) -> None:
    """A destination must be an http(s) URL or a URL-group name; a queue a plain name."""
    with pytest.raises(ValueError):
        Message(destination, b"", queue=queue)


def test_batched_body_must_be_text() -> None:
    """A batch carries bodies as JSON strings, so binary bodies are refused."""
    with pytest.raises(ValueError, match="UTF-8"):
        Message("https://x.example/a", b"\xff\xfe").batch_entry(None)
