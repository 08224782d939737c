"""What each answer and log line of the receiver says, word for word where a reader acts
on it: the 401 and 489 messages, the 500 log line with its job and message id, the
claims a Delivery carries, and the receiver's behaviour without any hook."""

from __future__ import annotations

import io
import logging
from datetime import datetime, timedelta, tzinfo
from typing import Any

import pytest
from flask import Flask, Response, request
from marshmallow import Schema, fields
from werkzeug.exceptions import BadRequest, HTTPException

from app import create_app, receiver
from app.delivery import Delivery
from app.errors import InvalidSignature, NonRetryableError, RetryLater
from app.hooks import HOOKS, add_delivery_hook, outcome, refusal
from app.jobs import JobRegistry
from app.payload import load_payload
from app.qstash.signature import sign
from app.receiver import with_qstash
from app.store.guard import GUARD_HEADER, guard_verdict, mark_guard_answer
from app.testing import DeliveryClient
from tests.conftest import APP_URL, CURRENT_KEY, TEST_CONFIG, Calls, make_registry

PATH = "/api/jobs/noop"


def test_a_missing_signature_says_so(client: DeliveryClient) -> None:
    """No Upstash-Signature header: 401 missing_signature, in plain words."""
    answer = client.post(PATH, data=b"{}").get_json()
    assert answer == {
        "code": "missing_signature",
        "status": 401,
        "message": "the request has no Upstash-Signature header",
        "errors": {},
    }


def test_an_empty_signature_says_so(client: DeliveryClient) -> None:
    """An empty Upstash-Signature header: 401 malformed_signature, saying it is empty."""
    answer = client.post(PATH, data=b"{}", headers={"Upstash-Signature": " "}).get_json()
    assert (answer["code"], answer["message"]) == (
        "malformed_signature",
        "the Upstash-Signature header is empty",
    )


def test_a_refusal_is_logged_with_url_peer_and_reason(
    client: DeliveryClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused delivery logs one warning: the URL it was checked against, the peer, why."""
    with caplog.at_level(logging.WARNING):
        client.post(PATH, data=b"{}")
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.getMessage() == (
        f"rejected delivery to {APP_URL}{PATH} from 127.0.0.1:"
        " the request has no Upstash-Signature header"
    )


def test_a_schema_error_is_named_and_listed(client: DeliveryClient) -> None:
    """A schema error answers 489 invalid_payload with a fixed message and the field errors."""
    answer = client.deliver("resize", {"targetWidth": 3}).get_json()
    assert answer == {
        "code": "invalid_payload",
        "status": 489,
        "message": "the payload does not match the job's schema",
        "errors": {"fileKey": ["Missing data for required field."]},
    }


def test_invalid_json_carries_the_parsers_reason(client: DeliveryClient) -> None:
    """Invalid JSON answers 489 with where the parser stopped."""
    answer = client.deliver("noop", body=b"{oops").get_json()
    assert answer["code"] == "invalid_json"
    assert answer["message"] == (
        "the body is not valid JSON: Expecting property name enclosed in double quotes:"
        " line 1 column 2 (char 1)"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[NaN]", "the body is not valid JSON: NaN is not a JSON value"),
        (b"[-Infinity]", "the body is not valid JSON: -Infinity is not a JSON value"),
        (
            b"[" + b"1" * 400 + b".5]",
            "the body is not valid JSON: the number 11111111111111111111 is out of range",
        ),
    ],
)
def test_numbers_json_has_not_are_named(client: DeliveryClient, body: bytes, message: str) -> None:
    """NaN, infinities and out-of-range numbers are named in the 489 (the number cut short)."""
    answer = client.deliver("noop", body=body).get_json()
    assert (answer["code"], answer["message"]) == ("invalid_json", message)


def test_too_deep_for_the_schema_says_so() -> None:
    """A payload the schema cannot load for its depth: the message says it is too deep."""

    class Tree(Schema):
        children = fields.List(fields.Nested(lambda: Tree()))

    depth = 400
    body = ('{"children": [' * depth + "{}" + "]}" * depth).encode()
    with pytest.raises(NonRetryableError) as caught:
        load_payload(body, Tree())
    assert (caught.value.code, caught.value.message) == (
        "invalid_payload",
        "the payload is nested too deeply",
    )


def test_retry_later_carries_its_errors(calls: Calls) -> None:
    """RetryLater's errors are in the 503's body, next to its message."""
    registry = make_registry(calls)
    registry.job("throttled")(
        lambda payload, delivery: (_ for _ in ()).throw(
            RetryLater("throttled", after=7, errors={"upstream": "429"})
        )
    )
    response = DeliveryClient(create_app(TEST_CONFIG, registry=registry)).deliver("throttled", {})
    assert response.headers["Retry-After"] == "7"
    assert response.get_json() == {
        "code": "retry_later",
        "status": 503,
        "message": "throttled",
        "errors": {"upstream": "429"},
    }


def _raiser(exc: BaseException) -> Any:
    def handler(payload: Any, delivery: Delivery) -> Any:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("exc", "status", "message"),
    [
        (BadRequest(), 400, BadRequest.description),
        (BadRequest(description="no such tenant"), 400, "no such tenant"),
        (HTTPException(), 500, "Unknown Error"),
    ],
)
def test_an_http_exception_in_the_handler_keeps_its_status(
    exc: HTTPException, status: int, message: str
) -> None:
    """abort(...) in a handler answers its status and description as the JSON error."""
    registry = JobRegistry()
    registry.job("aborts")(_raiser(exc))
    response = DeliveryClient(create_app(TEST_CONFIG, registry=registry)).deliver("aborts", {})
    assert response.get_json() == {
        "code": "http_error",
        "status": status,
        "message": message,
        "errors": {},
    }


def test_a_crash_is_logged_with_job_message_id_and_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A crashing view logs job, message id and retried, also outside the jobs blueprint."""
    app = create_app(TEST_CONFIG, registry=JobRegistry())

    @app.post("/hooks/crash")
    @with_qstash
    def hook(payload: Any, delivery: Delivery) -> Any:
        raise KeyError("boom")

    body = b"{}"
    headers = {
        "Upstash-Signature": sign(body, url=APP_URL + "/hooks/crash", key=CURRENT_KEY),
        "Upstash-Message-Id": "msg_hook",
        "Upstash-Retried": "4",
    }
    with caplog.at_level(logging.ERROR):
        response = app.test_client().post("/hooks/crash", data=body, headers=headers)
    assert response.get_json()["message"] == (
        "job 'hook' raised KeyError; QStash will retry (the traceback is in the app's log)"
    )
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "job hook failed: message_id=msg_hook retried=4"
    assert (record.__dict__["job"], record.__dict__["message_id"]) == ("hook", "msg_hook")
    assert record.exc_info is not None and record.exc_info[0] is KeyError


class _BrokenZone(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("tz database unreadable")

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "broken"


def test_an_answer_that_cannot_be_built_is_a_logged_500(
    calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    """RetryLater at a datetime whose zone raises: 500, and both failures are logged."""
    registry = make_registry(calls)
    registry.job("zoned")(_raiser(RetryLater(after=datetime(2030, 1, 1, tzinfo=_BrokenZone()))))
    client = DeliveryClient(create_app(TEST_CONFIG, registry=registry))
    with caplog.at_level(logging.ERROR):
        response = client.deliver("zoned", {}, message_id="msg_zone")
    assert response.status_code == 500
    assert response.get_json()["message"].startswith("job 'zoned' raised RetryLater;")
    building, crash = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert building.getMessage() == "could not build the answer to RetryLater: message_id=msg_zone"
    assert building.exc_info is not None and building.exc_info[0] is RuntimeError
    assert crash.getMessage() == "job zoned failed: message_id=msg_zone retried=0"
    assert crash.exc_info is not None and crash.exc_info[0] is RetryLater


def test_errors_that_are_not_json_are_left_out_and_logged(
    calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    """A 489 whose errors are not JSON still answers 489; a warning says what was left out."""
    registry = make_registry(calls)
    registry.job("odd")(_raiser(NonRetryableError("gone", errors={"at": object()})))
    client = DeliveryClient(create_app(TEST_CONFIG, registry=registry))
    with caplog.at_level(logging.WARNING):
        response = client.deliver("odd", {})
    assert response.status_code == 489 and response.get_json()["errors"] == {}
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "the errors of a 489 non_retryable answer are not JSON; left out"
    ]


def test_a_bug_in_verification_is_a_500_that_no_hook_stores(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception from verify() itself: 500 JSON, logged; the hooks see no Delivery."""
    seen: list[tuple[str | None, Delivery | None, int]] = []

    class Hook:
        def before_handler(self, delivery: Delivery) -> None:
            return None

        def after_delivery(self, job: Any, delivery: Any, response: Response, d: float) -> None:
            seen.append((job, delivery, response.status_code))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("bug")

    add_delivery_hook(app, Hook())
    monkeypatch.setattr(receiver, "verify", broken)
    with caplog.at_level(logging.ERROR):
        response = DeliveryClient(app).deliver("noop", {}, message_id="msg_bug", retried=3)
    assert response.status_code == 500
    assert response.get_json()["message"].startswith("job 'noop' raised ZeroDivisionError;")
    assert seen == [("noop", None, 500)]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "job noop failed: message_id=None retried=0"


def test_a_signature_errors_reason_is_always_one_of_ours(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a SignatureError carrying an unknown code is refused as invalid_signature."""
    seen: list[str | None] = []

    class Hook:
        def before_handler(self, delivery: Delivery) -> None:
            return None

        def after_delivery(self, job: Any, delivery: Any, response: Response, d: float) -> None:
            seen.append(refusal(response))

    def odd(*args: Any, **kwargs: Any) -> Any:
        error = InvalidSignature("odd")
        error.code = "caller-chosen"
        raise error

    add_delivery_hook(app, Hook())
    monkeypatch.setattr(receiver, "verify", odd)
    DeliveryClient(app).deliver("noop", {})
    assert seen == ["invalid_signature"]


def test_a_verified_delivery_carries_its_claims(client: DeliveryClient, calls: Calls) -> None:
    """The Delivery of a signed call holds the token's claims and says it was verified."""
    client.deliver("noop", {})
    delivery = calls.items[0][2]
    assert delivery.verified
    assert (delivery.claims["iss"], delivery.claims["sub"]) == ("Upstash", APP_URL + PATH)


def test_an_unsigned_call_in_debug_is_marked_unverified(calls: Calls) -> None:
    """FLASK_DEBUG + QSTASH_ALLOW_UNSIGNED: the unsigned call runs, marked unverified, no claims."""
    app = create_app(
        {**TEST_CONFIG, "DEBUG": True, "QSTASH_ALLOW_UNSIGNED": True},
        registry=make_registry(calls),
    )
    assert app.test_client().post(PATH, data=b"{}").status_code == 200
    delivery = calls.items[0][2]
    assert (delivery.verified, dict(delivery.claims)) == (False, {})


def test_no_retried_header_is_the_first_attempt(client: DeliveryClient, calls: Calls) -> None:
    """Without Upstash-Retried a delivery is attempt 1."""
    body = b"{}"
    headers = {"Upstash-Signature": sign(body, url=APP_URL + PATH, key=CURRENT_KEY)}
    assert client.post(PATH, data=body, headers=headers).status_code == 200
    assert (calls.items[0][2].retried, calls.items[0][2].attempt) == (0, 1)


def test_the_handler_can_read_the_body_from_the_request(calls: Calls) -> None:
    """The body is read once and kept: flask.request still has it inside the handler."""
    registry = JobRegistry()
    seen: list[bytes] = []
    registry.job("reader")(lambda payload, delivery: seen.append(request.get_data()))
    DeliveryClient(create_app(TEST_CONFIG, registry=registry)).deliver("reader", {"a": 1})
    assert seen == [b'{"a":1}']


class _CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.handed_out = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.handed_out += len(chunk)
        return chunk

    def readinto(self, buffer: Any) -> int:
        count = super().readinto(buffer)
        self.handed_out += count
        return count


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_body_is_not_read_past_the_limit(calls: Calls, chunked: bool) -> None:
    """A huge body costs at most the limit plus one byte of reading, whatever its framing."""
    limit = 100
    app = create_app({**TEST_CONFIG, "QSTASH_MAX_BODY_SIZE": limit}, registry=make_registry(calls))
    stream = _CountingStream(b"x" * 100_000)
    environ: dict[str, Any] = {"wsgi.input": stream}
    headers = {"Upstash-Signature": "x"}
    if chunked:
        environ["wsgi.input_terminated"] = True
        headers["Transfer-Encoding"] = "chunked"
    else:
        environ["CONTENT_LENGTH"] = "100000"
    response = app.test_client().post(PATH, headers=headers, environ_overrides=environ)
    assert response.status_code == 489
    assert stream.handed_out <= limit + 1


def test_deliveries_work_without_any_hook(calls: Calls) -> None:
    """With metrics, log and guard all off, the receiver answers as usual."""
    app = create_app({**TEST_CONFIG, "METRICS": False}, registry=make_registry(calls))
    assert app.extensions.get(HOOKS) is None
    client = DeliveryClient(app)
    assert client.deliver("noop", {}).status_code == 200
    assert client.deliver("give-up", {}).status_code == 489


def test_with_qstash_takes_a_schema_class_or_instance() -> None:
    """``schema=MySchema`` and ``schema=MySchema()`` both load the payload."""

    class Named(Schema):
        name = fields.String(required=True)

    app = create_app(TEST_CONFIG, registry=JobRegistry())
    for path, schema in (("/by-class", Named), ("/by-instance", Named())):
        app.add_url_rule(
            path,
            path,
            with_qstash(schema=schema, job=path)(lambda payload, delivery: payload),
            methods=["POST"],
        )
    client = app.test_client()
    for path in ("/by-class", "/by-instance"):
        body = b'{"name": "ada"}'
        headers = {"Upstash-Signature": sign(body, url=APP_URL + path, key=CURRENT_KEY)}
        response = client.post(path, data=body, headers=headers)
        assert (response.status_code, response.get_json()) == (200, {"name": "ada"})


@pytest.mark.parametrize(
    ("status", "verified", "expected"),
    [
        (200, True, "ok"),
        (299, True, "ok"),
        (300, True, "error"),
        (301, True, "error"),
        (199, True, "error"),
        (401, True, "error"),
        (401, False, "bad-signature"),
        (489, False, "non-retryable"),
        (503, True, "retry"),
        (500, True, "error"),
    ],
)
def test_outcome_names(status: int, verified: bool, expected: str) -> None:
    """2xx is ok; 401 is bad-signature only before verification; 489 and 503 by name."""
    assert outcome(status, verified=verified) == expected


def test_a_guard_answer_is_marked_in_header_and_attribute() -> None:
    """The guard's verdict is readable by the hooks and sent to the caller in a header."""
    response = mark_guard_answer(Response("{}"), "busy")
    assert response.headers[GUARD_HEADER] == "busy"
    assert guard_verdict(response) == "busy"
    assert guard_verdict(Response("{}")) is None
