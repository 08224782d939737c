"""Durations, Retry-After and QStash's default backoff."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.qstash.timing import (
    MAX_DURATION,
    MAX_DURATION_CHARS,
    DurationError,
    default_backoff,
    parse_duration,
    retry_after_seconds,
    retry_delay_seconds,
)

NOW = 1_700_000_000


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("5m", 300), ("1h", 3600), ("1d10h30m", 124200), ("30", 30), ("0s", 0),
     ("1h30m", 5400), ("50s", 50), ("1d1h30m", 91800), ("007m", 420), (" \t2h ", 7200),
     ("1d2h3m4s", 93784), ("9223372036s", MAX_DURATION)],
)  # fmt: skip
def test_durations_parse_like_qstash(text: str, seconds: int) -> None:
    """QStash durations combine d, h, m and s units, largest first; a bare number is seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", " ", "abc", "10x", "1.5s", "s", "-5s", "+5s", "10s5m", "1m1h", "1h1h", "5 m", "1h 30m",
     "500ms", "1w", "5M", "1D", "\u0665s", "\uff15m", "\u00b2", "5m\n", "\u00a05m", "5m\u2003",
     "9223372037s", "106751992d", "1" + "0" * 5000 + "s", "9" * 5000, "0x10s", "1_000s"],
)  # fmt: skip
def test_bad_durations_are_refused(text: str) -> None:
    """Anything else raises DurationError: other units or orders, signs, fractions,
    non-ASCII digits or spaces, more than Go's 292 years, megabytes of digits."""
    with pytest.raises(DurationError):
        parse_duration(text)


def test_a_bare_number_needs_bare_seconds() -> None:
    """QStash's own headers refuse "30" ("missing unit in duration"); Retry-After takes it."""
    assert parse_duration("30") == 30
    with pytest.raises(DurationError, match="units d, h, m and s"):
        parse_duration("30", bare_seconds=False)


def test_duration_errors_say_what_to_write() -> None:
    """The error names the text and the accepted form, or the limit that was passed."""
    with pytest.raises(DurationError, match=r"'banana' is not a duration: use a number of sec"):
        parse_duration("banana")
    with pytest.raises(DurationError, match="292 years"):
        parse_duration("999999999999s")
    with pytest.raises(DurationError, match=f"the most is {MAX_DURATION_CHARS}"):
        parse_duration("1" * 10_000)
    with pytest.raises(DurationError, match="bytes is not a duration"):
        parse_duration(b"5m")  # type: ignore[arg-type]


UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
#: Digits of other scripts (Arabic-Indic, fullwidth, Devanagari), which ``int`` accepts.
FOREIGN_DIGITS = str.maketrans(
    "0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"
)

numbers = st.one_of(
    st.integers(0, 100),
    st.integers(0, 10**12),
    st.integers(10**12, 10**40),
    st.integers(0, 99).map(lambda n: f"0{n}"),  # leading zeros
    st.integers(0, 99).map(lambda n: str(n).translate(FOREIGN_DIGITS)),
    st.sampled_from(["", "-1", "+1", "1.5", ".5", "1e3", "\uff11", "\u0967", "\u00b2"]),
)
units = st.one_of(
    st.sampled_from("dhms"),
    st.sampled_from(["", "ms", "us", "\u00b5s", "ns", "w", "y", "D", "H", "M", "S", " s", "sec"]),
)
spaces = st.sampled_from(["", "", " ", "\t", " \t ", "\n", "\r\n", "\u00a0", "\u2003", "\x0b"])


def expected_seconds(pairs: list[tuple[object, str]], before: str, after: str) -> int | None:
    """The oracle, written from QStash's documentation independently of the parser:
    ASCII whole numbers, each with a unit of d, h, m, s, strictly largest first, only
    spaces and tabs around, at most 64 characters and 292 years; None if refused."""
    text = "".join(f"{number}{unit}" for number, unit in pairs)
    if not pairs or len(text) > MAX_DURATION_CHARS or before.strip(" \t") or after.strip(" \t"):
        return None
    order = "dhms"
    positions = [order.find(unit) if unit in UNITS else -1 for _, unit in pairs]
    if -1 in positions or positions != sorted(set(positions)):
        return None
    digits = [str(number) for number, _ in pairs]
    if not all(d and all(c in "0123456789" for c in d) for d in digits):
        return None
    total = sum(int(d) * UNITS[unit] for d, (_, unit) in zip(digits, pairs, strict=True))
    return total if total <= MAX_DURATION else None


@settings(max_examples=400)
@given(
    pairs=st.lists(st.tuples(numbers, units), min_size=0, max_size=5),
    before=spaces,
    after=spaces,
)
def test_structured_durations_parse_exactly_as_documented(
    pairs: list[tuple[object, str]], before: str, after: str
) -> None:
    """Sequences of (number, unit) pairs with any whitespace, digits of any script and
    numbers up to 10**40: the documented value, or DurationError and nothing else."""
    # A unitless number followed by another pair would merge its digits into the next
    # number ("0" + "0d" is "00d"): the pairs would no longer describe the text.
    assume(all(unit for _, unit in pairs[:-1]))
    text = before + "".join(f"{number}{unit}" for number, unit in pairs) + after
    expected = expected_seconds(pairs, before, after)
    for bare in (False, True):
        wanted = bare_seconds(text) if bare and expected is None else expected
        if wanted is None:
            with pytest.raises(DurationError):
                parse_duration(text, bare_seconds=bare)
        else:
            assert parse_duration(text, bare_seconds=bare) == wanted


def bare_seconds(text: str) -> int | None:
    """The oracle for a bare number of seconds: ASCII digits within the same bounds."""
    raw = text.strip(" \t")
    if not raw or len(raw) > MAX_DURATION_CHARS or any(c not in "0123456789" for c in raw):
        return None
    return int(raw) if int(raw) <= MAX_DURATION else None


@settings(max_examples=300)
@given(st.text(max_size=80) | st.from_regex(r"\A[0-9dhms \t]{0,80}\Z"))
def test_any_text_is_a_duration_or_a_duration_error(text: str) -> None:
    """Whatever the text, the answer is whole seconds within bounds or DurationError."""
    for bare in (False, True):
        try:
            seconds = parse_duration(text, bare_seconds=bare)
        except DurationError:
            continue
        assert isinstance(seconds, int) and 0 <= seconds <= MAX_DURATION


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


def test_the_length_limit_is_64_characters_after_stripping() -> None:
    """64 characters (leading zeros count) are read; 65 are refused unread, and the error
    shows only their first 20."""
    longest = "0" * 62 + "1s"
    assert parse_duration(f"\t{longest} ") == 1
    with pytest.raises(DurationError) as refused:
        parse_duration("0" + longest)
    assert str(refused.value) == (
        f"{'0' * 20!r}... is not a duration: 65 characters, the most is 64"
    )
