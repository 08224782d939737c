"""Upstash-Retry-Delay expressions: QStash's functions work, anything else is refused."""

from __future__ import annotations

import pytest

from app.qstash.retry_delay import MAX_DELAY_MS, RetryDelayError, evaluate, parse


@pytest.mark.parametrize(
    ("expression", "retried", "expected"),
    [
        ("1000", 3, 1000),
        ("1000 * (1 + retried)", 2, 3000),
        ("pow(2, retried) * 1000", 3, 8000),
        ("max(1000, pow(2, retried) * 100)", 1, 1000),
        ("min(sqrt(abs(-16)), 3) + floor(1.7) + ceil(0.2) + round(0.4)", 0, 5),
        ("exp(0) * 10 % 7 - -1", 0, 4),
    ],
)
def test_documented_expressions_evaluate(expression: str, retried: int, expected: float) -> None:
    """The documented functions and operators compute milliseconds over ``retried``."""
    assert evaluate(expression, retried) == expected


@pytest.mark.parametrize(
    "attack",
    [
        "__import__('os').system('id')",
        "().__class__.__bases__[0].__subclasses__()",
        "(lambda: 1)()",
        "open('/etc/passwd')",
        "retried.real",
        "[1][0]",
        "'a' * 1000",
        "pow(2, x=3)",
        "retried if 1 else 2",
        "1 < 2",
        "pow",
        "eval('1')",
        "1 // 2",
    ],
)
def test_anything_but_arithmetic_is_refused(attack: str) -> None:
    """Names, attributes, subscripts, strings, lambdas and other calls never evaluate."""
    with pytest.raises(RetryDelayError):
        parse(attack)


def test_overflowing_expression_is_an_error_not_a_crash() -> None:
    """A power that overflows raises RetryDelayError."""
    with pytest.raises(RetryDelayError):
        evaluate("pow(10, pow(10, retried))", 5)


def test_delay_is_clamped_to_one_day() -> None:
    """QStash caps a retry delay at one day; negative delays become zero."""
    assert evaluate("retried * 1e12", 5) == MAX_DELAY_MS
    assert evaluate("-5000", 0) == 0


def test_overlong_expression_is_refused() -> None:
    """An expression longer than 256 characters is refused before parsing."""
    with pytest.raises(RetryDelayError):
        parse("1+" * 200 + "1")
