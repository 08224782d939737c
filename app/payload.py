"""A delivery's body as the handler receives it: strict JSON, then the job's schema.

Anything that cannot become the payload raises ``NonRetryableError`` (489: QStash sends
the message to the DLQ at once, since no retry can fix the bytes).
"""

from __future__ import annotations

import json
import math
from typing import Any

from marshmallow import Schema, ValidationError

from app.errors import NonRetryableError

__all__ = ["load_payload", "schema_error"]


def load_payload(body: bytes, schema: Schema | None) -> Any:
    """Parse the JSON body and load it with ``schema``; raise ``NonRetryableError`` if bad.

    An empty body (what a QStash schedule created without one delivers) is None without
    a schema and ``{}`` with one, so the schema's defaults and required fields apply.
    """
    if not body.strip():
        if schema is None:
            return None
        data: Any = {}
    else:
        try:
            # What json.loads(bytes) does, with a decoder made once, not once per call.
            data = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
        except (ValueError, RecursionError) as exc:
            raise _invalid_json(exc) from None
    if schema is None:
        return data
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise schema_error(exc) from None
    except RecursionError:
        raise NonRetryableError(
            "the payload is nested too deeply", code="invalid_payload"
        ) from None


def _not_json(constant: str) -> Any:
    # Python's json reads NaN, Infinity and -Infinity, which JSON (RFC 8259) has not.
    raise ValueError(f"{constant} is not a JSON value")


def _finite(text: str) -> float:
    # 1e999 is a JSON number, but no float: Python would read it as infinity.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


#: JSON as RFC 8259 has it: no NaN, no Infinity, no number that is no float.
_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)


def _invalid_json(exc: Exception) -> NonRetryableError:
    # The parser's own messages are short ("Expecting value: line 1 column 1 (char 0)").
    return NonRetryableError(f"the body is not valid JSON: {exc}", code="invalid_json")


def schema_error(exc: ValidationError) -> NonRetryableError:
    message = "the payload does not match the job's schema"
    return NonRetryableError(message, errors=exc.messages, code="invalid_payload")
