"""Durations (``"1d10h30m"``) and retry-delay expressions, validated before anything is sent.

QStash rejects a bad ``Upstash-Delay`` or ``Upstash-Retry-Delay`` only when it receives
the message; checking here turns that into a ``ValueError`` at the call site. The retry
delay is an arithmetic expression in milliseconds over the variable ``retried`` with the
functions ``pow sqrt abs exp floor ceil round min max``; it is parsed with ``ast`` (never
``eval``) and can be evaluated the same way, which the stub queue uses.
"""

from __future__ import annotations

import ast
import functools
import math
import re
from collections.abc import Callable
from datetime import timedelta

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNIT_SECONDS = (86400, 3600, 60, 1)
MAX_EXPRESSION_LENGTH = 200

FUNCTIONS: dict[str, Callable[..., float]] = {
    "pow": math.pow,
    "sqrt": math.sqrt,
    "abs": abs,
    "exp": math.exp,
    "floor": math.floor,
    "ceil": math.ceil,
    "round": round,
    "min": min,
    "max": max,
}
_OPERATORS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Mod: lambda a, b: a % b,
}

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
        return _parse_duration(value, name)
    raise ValueError(f"{name} must be seconds, a timedelta or a string like '5m', not {value!r}")


@functools.lru_cache(maxsize=512)
def _parse_duration(text: str, name: str) -> int:
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise ValueError(
            f"{name} {text!r} is not a duration: use d, h, m and s in that order, like '1d10h30m'"
        )
    pairs = zip(match.groups(), _UNIT_SECONDS, strict=True)
    return sum(int(part) * unit for part, unit in pairs if part)


def duration_header(value: Duration, *, name: str = "delay") -> str:
    """Return ``value`` as QStash's header text: strings as given, numbers as ``"{n}s"``."""
    seconds = duration_seconds(value, name=name)
    return value.strip() if isinstance(value, str) else f"{seconds}s"


def parse_retry_delay(expression: str) -> ast.Expression:
    """Validate a retry-delay expression and return its syntax tree."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError(f"retry_delay must be a non-empty expression, not {expression!r}")
    return _parse_retry_delay(expression)


@functools.lru_cache(maxsize=256)  # the same few expressions are validated on every publish
def _parse_retry_delay(expression: str) -> ast.Expression:
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ValueError(f"retry_delay is longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"retry_delay {expression!r} is not an expression: {exc.msg}") from None
    for node in ast.walk(tree):
        _check_node(node, expression)
    return tree


def _check_node(node: ast.AST, expression: str) -> None:
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Call, ast.Load, ast.USub, ast.UAdd)
    if isinstance(node, allowed) or type(node) in _OPERATORS:
        if isinstance(node, ast.Call) and not _is_known_call(node):
            raise ValueError(
                f"retry_delay {expression!r}: only {', '.join(FUNCTIONS)} may be called"
            )
        return
    if isinstance(node, ast.Name) and node.id in {"retried", *FUNCTIONS}:
        return
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return
    text = ast.unparse(node) if isinstance(node, ast.expr) else type(node).__name__
    raise ValueError(
        f"retry_delay {expression!r}: {text!r} is not allowed (numbers, 'retried', + - * / %"
        " and pow sqrt abs exp floor ceil round min max only)"
    )


def _is_known_call(node: ast.Call) -> bool:
    return isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and not node.keywords


def evaluate_retry_delay(expression: str, retried: int) -> float:
    """Return the delay in milliseconds ``expression`` gives after ``retried`` retries."""
    return float(_evaluate(parse_retry_delay(expression).body, retried))


def _evaluate(node: ast.expr, retried: int) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(retried)
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, retried)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        operator = _OPERATORS[type(node.op)]
        return operator(_evaluate(node.left, retried), _evaluate(node.right, retried))
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    return float(FUNCTIONS[node.func.id](*(_evaluate(arg, retried) for arg in node.args)))
