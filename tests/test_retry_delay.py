"""Upstash-Retry-Delay expressions: QStash's functions work, anything else is refused."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.qstash.retry_delay import FUNCTIONS, MAX_DELAY_MS, RetryDelayError, evaluate, parse


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


@pytest.mark.parametrize(
    "expression",
    [
        "round(1, -99999999)",  # on ints: computes 10**99999999
        "round(retried, -999999999)",
        "round(1.5, 2)",
        "pow(2)",
        "pow(2, 3, 4)",
        "sqrt(1, 2)",
        "floor()",
        "min(1)",
        "max(retried)",
    ],
)
def test_wrong_arity_is_refused_when_parsed(expression: str) -> None:
    """Each function takes its own number of arguments: round one, pow two, min/max two+."""
    with pytest.raises(RetryDelayError, match="positional argument"):
        parse(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "floor(1e300) * floor(1e300) * floor(1e300) * floor(1e300) * floor(1e300)",
        "99999999999999999999 * 99999999999999999999 * 99999999999999999999",
        "ceil(1e308) * ceil(1e308) * ceil(1e308) * ceil(1e308) * ceil(1e308) * ceil(1e308)",
        "1e308 * 10",
        "max(1e308 * 1e308, 1)",
    ],
)
def test_huge_values_are_clamped_to_one_day(expression: str) -> None:
    """Values beyond any float's range are a day, QStash's cap, not an exception or a hang."""
    assert evaluate(expression, 3) == MAX_DELAY_MS


@pytest.mark.parametrize(
    "expression",
    ["1e308 * 10 - 1e308 * 10", "floor(1e308 * 10)", "round(1e308 * 10)", "sqrt(-1)", "1 % 0"],
)
def test_undefined_values_are_errors(expression: str) -> None:
    """inf - inf, floor(inf), sqrt(-1), x % 0: a RetryDelayError, never another exception."""
    with pytest.raises(RetryDelayError):
        evaluate(expression, 0)


def test_result_is_a_float_even_from_int_functions() -> None:
    """floor/ceil/round of a float are floats here (no int can grow without bound)."""
    value = evaluate("floor(2.5) + round(retried)", 3)
    assert value == 5.0 and isinstance(value, float)


def _numbers() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(min_value=0, max_value=10**30).map(str),
        st.floats(min_value=0, allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(["retried", "1e308", "0", "1e-308"]),
    )


def _expressions() -> st.SearchStrategy[str]:
    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        binary = st.builds(
            lambda a, op, b: f"({a} {op} {b})", children, st.sampled_from("+-*/%"), children
        )
        unary = st.builds(lambda op, a: f"{op}{a}", st.sampled_from("+-"), children)
        call = st.builds(
            lambda name, args: f"{name}({', '.join(args)})",
            st.sampled_from([*FUNCTIONS, "eval", "__import__"]),
            st.lists(children, min_size=0, max_size=3),
        )
        return st.one_of(binary, unary, call)

    return st.recursive(_numbers(), extend, max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expression=st.one_of(_expressions(), st.text(max_size=300)),
    retried=st.integers(min_value=0, max_value=100),
)
def test_any_expression_is_a_bounded_delay_or_a_retry_delay_error(
    expression: str, retried: int
) -> None:
    """Any text, structured or not: a delay in [0, one day] quickly, or RetryDelayError."""
    started = time.perf_counter()
    try:
        value = evaluate(expression, retried)
    except RetryDelayError:
        pass
    else:
        assert isinstance(value, float) and 0.0 <= value <= MAX_DELAY_MS
    assert time.perf_counter() - started < 1.0
