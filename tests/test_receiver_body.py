"""The body as the receiver reads it: the size limit at its exact edge, for Content-Length
and chunked framing; a body cut short; JSON that Python reads but JSON has not; depth."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask import Flask, request
from marshmallow import Schema, fields

from app import create_app
from app.delivery import Delivery
from app.errors import NonRetryableError
from app.hooks import add_delivery_hook, refusal
from app.jobs import JobRegistry
from app.payload import load_payload
from app.qstash.protocol import public_url as _public_url
from app.qstash.signature import sign
from app.receiver import expected_url
from app.testing import DeliveryClient
from tests.conftest import APP_URL, CURRENT_KEY, TEST_CONFIG

LIMIT = 64
PATH = "/api/jobs/echo"


class Tree(Schema):
    children = fields.List(fields.Nested(lambda: Tree()))


def make_app(limit: int) -> Flask:
    registry = JobRegistry()
    registry.job("echo")(lambda payload, delivery: {"size": len(delivery.body)})
    registry.job("tree", schema=Tree)(lambda payload, delivery: {"ok": True})
    return create_app({**TEST_CONFIG, "QSTASH_MAX_BODY_SIZE": limit}, registry=registry)


@pytest.fixture
def app() -> Flask:
    return make_app(LIMIT)


def _post(app: Flask, body: bytes, *, chunked: bool) -> Any:
    headers = {"Upstash-Signature": sign(body, url=APP_URL + PATH, key=CURRENT_KEY)}
    client = DeliveryClient(app)
    if not chunked:
        return client.post(PATH, data=body, headers=headers)
    return client.post(
        PATH,
        input_stream=io.BytesIO(body),
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def _json_of(size: int) -> bytes:
    return b'"' + b"x" * (size - 2) + b'"'


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_is_read(app: Flask, chunked: bool) -> None:
    """QSTASH_MAX_BODY_SIZE bytes are accepted, with or without a Content-Length."""
    response = _post(app, _json_of(LIMIT), chunked=chunked)
    assert response.status_code == 200
    assert response.get_json() == {"size": LIMIT}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("size", [LIMIT + 1, LIMIT + 2, 10 * LIMIT])
def test_a_body_over_the_limit_is_refused_unread(app: Flask, chunked: bool, size: int) -> None:
    """One byte over the limit answers 489 payload_too_large, before any verification."""
    response = _post(app, _json_of(size), chunked=chunked)
    assert response.status_code == 489
    assert response.headers["Upstash-NonRetryable-Error"] == "true"
    assert response.get_json()["code"] == "payload_too_large"
    assert str(LIMIT) in response.get_json()["message"]
    assert refusal(response) is None  # the marker is for hooks, not sent to the client


def test_a_body_shorter_than_its_content_length_is_unreadable(app: Flask) -> None:
    """A body cut short (the client went away) answers 400 JSON, not werkzeug's HTML page."""
    response = DeliveryClient(app).post(
        PATH, data=b'{"a":', environ_overrides={"CONTENT_LENGTH": "40"}
    )
    assert response.status_code == 400
    assert response.get_json() == {
        "code": "unreadable_body",
        "status": 400,
        "message": "the body ended before its length",
        "errors": {},
    }


def test_refusals_are_marked_for_the_hooks(app: Flask) -> None:
    """The hooks learn why a request was refused, as one of our own codes."""
    seen: list[str | None] = []

    class Hook:
        def before_handler(self, delivery: Delivery) -> None:
            return None

        def after_delivery(self, job: Any, delivery: Any, response: Any, duration: float) -> None:
            seen.append(refusal(response))

    add_delivery_hook(app, Hook())
    client = DeliveryClient(app)
    client.post(PATH, data=b"{}")
    client.post(PATH, data=b"{}", headers={"Upstash-Signature": "x.y.z"})
    client.post(PATH, data=_json_of(LIMIT + 1))
    client.post(PATH, data=b'{"a":', environ_overrides={"CONTENT_LENGTH": "40"})
    client.deliver("echo", {})
    assert seen == [
        "missing_signature",
        "malformed_signature",
        "payload_too_large",
        "unreadable_body",
        None,
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"NaN",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b"[-Infinity]",
        b'{"a": 1e999}',
        b'{"a": -1e400}',
        b"1" * 5000,  # past Python's 4300-digit limit on int()
    ],
)
def test_numbers_json_has_not_are_invalid_json(body: bytes) -> None:
    """NaN, Infinity and numbers beyond a float's range never reach a schema or handler."""
    for schema in (None, Tree()):
        with pytest.raises(NonRetryableError) as caught:
            load_payload(body, schema)
        assert caught.value.code == "invalid_json"


def test_large_finite_numbers_still_load() -> None:
    """Big but finite floats and big ints are JSON numbers like any other."""
    assert load_payload(
        b'{"a": 1.5e308, "b": -1e-400, "c": 123456789012345678901234567890}', None
    ) == {
        "a": 1.5e308,
        "b": -0.0,
        "c": 123456789012345678901234567890,
    }


def test_a_payload_nested_deeper_than_the_schema_can_load_is_non_retryable() -> None:
    """A payload that makes the schema recurse too deeply answers 489, not 500."""
    depth = 400
    body = ('{"children": [' * depth + "{}" + "]}" * depth).encode()
    response = DeliveryClient(make_app(1 << 20)).deliver("tree", body=body)
    assert response.status_code == 489
    assert response.get_json()["code"] == "invalid_payload"
    assert "deeply" in response.get_json()["message"]


def test_a_body_nested_deeper_than_json_can_parse_is_invalid_json() -> None:
    """100,000 nested brackets answer 489 invalid_json, without a schema too."""
    client = DeliveryClient(make_app(1 << 20))
    response = client.deliver("echo", body=b"[" * 100_000 + b"]" * 100_000)
    assert response.status_code == 489
    assert response.get_json()["code"] == "invalid_json"


def test_varied_query_strings_cannot_grow_the_url_cache(app: Flask) -> None:
    """Public URLs are cached, but at most 512 of them whatever query strings arrive."""
    _public_url.cache_clear()
    for i in range(600):
        with app.test_request_context(f"{PATH}?n={i}"):
            assert expected_url(request, APP_URL) == f"{APP_URL}{PATH}?n={i}"
    assert _public_url.cache_info().currsize == 512


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "Zoë"}'.encode(),
        '{"name": "Zoë"}'.encode("utf-16"),
        '{"name": "Zoë"}'.encode("utf-16-be"),
        '{"name": "Zoë"}'.encode("utf-32"),
        b'\xef\xbb\xbf{"bom": true}',
        b'["\xed\xa0\x80"]',  # a lone surrogate, encoded: json.loads keeps it
        b'["\\ud800"]',
    ],
)
def test_bytes_are_decoded_as_json_loads_decodes_them(body: bytes) -> None:
    """Encoding detection, BOM and surrogates: what json.loads reads, load_payload reads."""
    assert load_payload(body, None) == json.loads(body)
