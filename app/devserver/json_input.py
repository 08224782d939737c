"""JSON the API reads from a request: strict, bounded, and refused with a 400 saying why.

Every JSON body the API parses goes through ``parse_json``; field checks (types, names,
ranges) stay with the views that read the fields. What is refused here, and why:

- nesting deeper than ``MAX_DEPTH``: no QStash call nests more than a few levels, and
  Python's parser would otherwise raise ``RecursionError`` (a 500) past ~1,000 levels;
- bytes that are not UTF-8 (RFC 8259), ``NaN``/``Infinity`` (not JSON; Go's parser, which
  QStash uses, refuses them), numbers past Python's 4,300-digit limit;
- lone surrogates (``"\\ud800"``): valid JSON syntax, but no UTF-8 text can hold them,
  so SQLite and HTTP would fail on them later, far from the request.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

from app.devserver.publish import bad_request

#: The deepest nesting accepted (a batch item's headers are three levels down).
MAX_DEPTH = 32

_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_json(raw: bytes, what: str = "the body") -> Any:
    """Return the JSON document ``raw``; raise a 400 ``APIError`` naming what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"{what} is not UTF-8: byte {exc.start} is invalid") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        _too_deep(what)
    except ValueError as exc:
        raise bad_request(f"{what} is not valid JSON: {exc}"[:300]) from None
    _check_tree(value, what)
    return value


def _check_text(value: str, what: str) -> None:
    if value.isascii():
        return
    match = _SURROGATE.search(value)
    if match is not None:
        code = f"\\u{ord(match.group()):04x}"
        raise bad_request(f"{what} holds a lone surrogate ({code}), which no UTF-8 text can")


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _too_deep(what: str) -> NoReturn:
    raise bad_request(f"{what} is nested more than {MAX_DEPTH} levels deep") from None


def _check_tree(value: Any, what: str) -> None:
    # Iterative: the depth limit is what this enforces, so it must not recurse itself.
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_text(node, what)
            continue
        if not isinstance(node, list | dict):
            continue
        if depth >= MAX_DEPTH:
            _too_deep(what)
        if isinstance(node, dict):
            for key in node:
                _check_text(key, what)
            node = list(node.values())
        stack.extend((item, depth + 1) for item in node)
