"""``Upstash-Retry-Delay`` expressions, evaluated safely over an AST whitelist.

QStash lets a publisher replace its default backoff with an arithmetic expression in
milliseconds over the variable ``retried`` (``pow(2, retried) * 1000``). The expression is
parsed with :mod:`ast` and only numbers, ``retried``, ``+ - * / %``, unary signs and the
documented functions are evaluated: no names, attributes, subscripts or calls to anything
else, so a hostile header cannot run code. Never ``eval``. Every value is a float, so no
step can build a huge integer (``round(1, -10**8)`` on ints computes ``10**10**8``): the
work is bounded by the expression's length, and the result is clamped to one day.
"""

from __future__ import annotations

import ast
import math
import operator
import threading
from collections.abc import Callable
from typing import Any

#: The functions QStash documents for retry-delay expressions.
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
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
MAX_LENGTH = 256
#: How many arguments each function takes: (at least, at most).
ARITY: dict[str, tuple[int, int]] = {
    "pow": (2, 2),
    "sqrt": (1, 1),
    "abs": (1, 1),
    "exp": (1, 1),
    "floor": (1, 1),
    "ceil": (1, 1),
    "round": (1, 1),
    "min": (2, MAX_LENGTH),
    "max": (2, MAX_LENGTH),
}
#: One day, QStash's cap on any retry delay, in milliseconds.
MAX_DELAY_MS = 86_400_000
#: One ``ast.parse`` at a time: CPython 3.11 counts the AST constructor's recursion per
#: interpreter, not per thread, so a parse interrupted by another thread's parse fails with
#: "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905); the dev
#: server parses on its API and delivery threads. Reentrant: a finalizer that parses while
#: its thread holds the lock gets that SystemError, never a deadlock.
_PARSING = threading.RLock()


class RetryDelayError(ValueError):
    """The expression is not a valid ``Upstash-Retry-Delay``."""


def parse(text: str) -> ast.Expression:
    """Parse and validate ``text``; raise ``RetryDelayError`` saying what is not allowed."""
    if not text.strip() or len(text) > MAX_LENGTH:
        raise RetryDelayError(f"retry delay must be 1 to {MAX_LENGTH} characters")
    try:
        with _PARSING:
            tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise RetryDelayError(f"invalid retry delay expression {text!r}") from None
    callees = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        _check_node(node, text)
        if isinstance(node, ast.Name) and node.id != "retried" and id(node) not in callees:
            raise RetryDelayError(f"{node.id!r} must be called in {text!r}")
    return tree


def _check_node(node: ast.AST, text: str) -> None:
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Call)
    if type(node) in _BINARY or type(node) in _UNARY or isinstance(node, ast.Load):
        return
    if not isinstance(node, allowed):
        raise RetryDelayError(f"{type(node).__name__} is not allowed in {text!r}")
    if isinstance(node, ast.Constant) and (
        isinstance(node.value, bool) or not isinstance(node.value, int | float)
    ):
        raise RetryDelayError(f"only numbers are allowed in {text!r}")
    if isinstance(node, ast.Name) and node.id != "retried" and node.id not in FUNCTIONS:
        raise RetryDelayError(f"unknown name {node.id!r} in {text!r} (only 'retried')")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise RetryDelayError(f"only {', '.join(FUNCTIONS)} may be called in {text!r}")
        fewest, most = ARITY[node.func.id]
        if node.keywords or not fewest <= len(node.args) <= most:
            count = str(fewest) if fewest == most else f"{fewest} or more"
            raise RetryDelayError(
                f"{node.func.id}() takes {count} positional argument(s) in {text!r}"
            )


def evaluate(text: str, retried: int) -> float:
    """Return the delay in milliseconds for ``retried``, clamped to ``[0, one day]``."""
    tree = parse(text)
    try:
        value = float(_eval(tree.body, retried))
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise RetryDelayError(f"cannot evaluate {text!r} for retried={retried}: {exc}") from None
    if math.isnan(value):
        raise RetryDelayError(f"{text!r} is not a number for retried={retried}")
    return min(max(value, 0.0), float(MAX_DELAY_MS))


def _eval(node: ast.expr, retried: int) -> float:
    # Floats throughout: an int would grow without bound (floor(1e300) * floor(1e300) …).
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name) and node.id == "retried":
        return float(retried)
    if isinstance(node, ast.UnaryOp):
        return float(_UNARY[type(node.op)](_eval(node.operand, retried)))
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, retried), _eval(node.right, retried)
        return float(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return float(FUNCTIONS[node.func.id](*(_eval(arg, retried) for arg in node.args)))
    raise RetryDelayError(f"{type(node).__name__} is not allowed")  # unreachable after parse()
