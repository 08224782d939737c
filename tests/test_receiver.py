"""with_qstash: how each handler outcome becomes a status QStash understands."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from marshmallow import Schema, fields

from app import create_app
from app.delivery import Delivery
from app.errors import RetryLater
from app.jobs import JobRegistry
from app.qstash.signature import sign
from app.receiver import with_qstash
from app.testing import DeliveryClient
from tests.conftest import APP_URL, CURRENT_KEY, TEST_CONFIG, Calls

NON_RETRYABLE = "Upstash-NonRetryable-Error"


def test_returned_value_is_200_json(client: DeliveryClient, calls: Calls) -> None:
    """A handler's return value is answered as 200 with its JSON."""
    response = client.deliver("resize", {"fileKey": "a.jpg", "targetWidth": 320}, retried=2)
    assert response.status_code == 200
    assert response.get_json() == {"width": 320, "attempt": 3}
    assert calls.items[0][1] == {"file_key": "a.jpg", "target_width": 320}


def test_delivery_carries_qstash_headers(client: DeliveryClient, calls: Calls) -> None:
    """The Delivery exposes QStash's headers and the publisher's forwarded ones."""
    client.deliver(
        "noop",
        {"x": 1},
        message_id="msg_42",
        retried=3,
        schedule_id="scd_7",
        headers={
            "Upstash-Caller-Ip": "203.0.113.9",
            "Upstash-Topic-Name": "orders",
            "Upstash-Region": "EU-CENTRAL-1",
            "X-Tenant": "acme",
        },
    )
    delivery = calls.items[0][2]
    assert (delivery.message_id, delivery.retried, delivery.schedule_id) == ("msg_42", 3, "scd_7")
    assert (delivery.caller_ip, delivery.topic_name, delivery.region) == (
        "203.0.113.9",
        "orders",
        "EU-CENTRAL-1",
    )
    assert delivery.headers["X-Tenant"] == "acme"
    assert "Upstash-Signature" not in delivery.headers
    assert delivery.body == b'{"x":1}'
    assert delivery.url == APP_URL + "/api/jobs/noop"
    assert delivery.job == "noop" and delivery.verified


@pytest.mark.parametrize("raw", ["", "abc", "-1"])
def test_garbled_retried_header_counts_as_first_attempt(
    raw: str, client: DeliveryClient, calls: Calls
) -> None:
    """An unparsable Upstash-Retried header is read as 0 rather than failing the delivery."""
    response = client.deliver("noop", {}, headers={"Upstash-Retried": raw})
    assert response.status_code == 200
    assert calls.items[0][2].retried == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_payload"),
        (b" \r\n\t", "invalid_payload"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
        (b'"a string"', "invalid_payload"),
        (b'{"targetWidth": "wide"}', "invalid_payload"),
    ],
)
def test_bad_payload_is_non_retryable(
    body: bytes, code: str, client: DeliveryClient, calls: Calls
) -> None:
    """Invalid JSON or a schema error answers 489 + Upstash-NonRetryable-Error."""
    response = client.deliver("resize", body=body)
    assert response.status_code == 489
    assert response.headers[NON_RETRYABLE] == "true"
    assert response.get_json()["code"] == code
    assert len(calls) == 0


@pytest.mark.parametrize("body", [b"", b"  ", b"\n", b"\r\n\t "])
def test_empty_body_loads_as_an_empty_object_through_the_schema(
    body: bytes, client: DeliveryClient, calls: Calls
) -> None:
    """An empty body (a schedule created without one) is ``{}``: a missing field is named."""
    response = client.deliver("resize", body=body)
    assert response.status_code == 489
    assert response.get_json()["code"] == "invalid_payload"
    assert response.get_json()["errors"] == {"fileKey": ["Missing data for required field."]}
    assert len(calls) == 0


@pytest.mark.parametrize("body", [b"", b" \n"])
def test_empty_body_runs_a_job_whose_fields_are_all_optional(body: bytes) -> None:
    """A cron job whose schema has only optional fields runs on an empty body, with defaults."""

    class Report(Schema):
        day = fields.String(load_default="today")

    registry = JobRegistry()
    seen: list[Any] = []
    registry.job("report", schema=Report)(lambda payload, delivery: seen.append(payload))
    registry.job("raw")(lambda payload, delivery: seen.append(payload))
    client = DeliveryClient(create_app(TEST_CONFIG, registry=registry))
    assert client.deliver("report", body=body).status_code == 200
    assert client.deliver("raw", body=body).status_code == 200
    assert seen == [{"day": "today"}, None]


def test_schema_errors_name_the_fields_by_wire_name(client: DeliveryClient) -> None:
    """Schema errors are listed per camelCase field, as the publisher sent them."""
    response = client.deliver("resize", {"targetWidth": "wide", "extra": 1})
    errors = response.get_json()["errors"]
    assert set(errors) == {"fileKey", "targetWidth", "extra"}


def test_non_retryable_error_is_489(client: DeliveryClient) -> None:
    """NonRetryableError answers 489 with its message and errors."""
    response = client.deliver("give-up", {})
    assert response.status_code == 489
    assert response.headers[NON_RETRYABLE] == "true"
    assert response.get_json() == {
        "code": "non_retryable",
        "status": 489,
        "message": "the account was deleted",
        "errors": {"account": "gone"},
    }


def test_retry_later_is_503_with_retry_after(client: DeliveryClient) -> None:
    """RetryLater answers 503 with Retry-After in whole seconds."""
    response = client.deliver("later", {})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "90"
    assert NON_RETRYABLE not in response.headers


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (lambda: timedelta(minutes=2), 120),
        (lambda: 0.2, 1),
        (lambda: -5, 1),
        (lambda: datetime.now(UTC) + timedelta(seconds=600), 600),
        (lambda: datetime.now() + timedelta(seconds=600), 600),
    ],
)
def test_retry_after_accepts_seconds_timedelta_and_datetime(
    after: Callable[[], Any], expected: int
) -> None:
    """Retry-After is computed from seconds, timedeltas and datetimes, never below 1 s."""
    assert abs(RetryLater(after=after()).retry_after_seconds - expected) <= 1


def test_unexpected_exception_is_500_and_logged(
    client: DeliveryClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Any other exception answers 500 without details and logs message id and traceback."""
    with caplog.at_level(logging.ERROR):
        response = client.deliver("crash", {}, message_id="msg_crash", retried=2)
    assert response.status_code == 500
    assert NON_RETRYABLE not in response.headers
    assert "hunter2" not in response.get_data(as_text=True)
    assert "RuntimeError" in response.get_json()["message"]
    record = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert "msg_crash" in record.getMessage() and "crash" in record.getMessage()
    assert "retried=2" in record.getMessage()
    assert record.exc_info is not None


def test_unserialisable_result_is_500(calls: Calls) -> None:
    """A result that is not JSON is a handler bug: 500, so QStash retries after a fix."""
    registry = JobRegistry()
    registry.job("bad-result")(lambda payload, delivery: {"when": object()})
    app = create_app(TEST_CONFIG, registry=registry)
    response = DeliveryClient(app).deliver("bad-result", {})
    assert response.status_code == 500


def test_oversized_body_is_non_retryable(calls: Calls) -> None:
    """A body over QSTASH_MAX_BODY_SIZE answers 489 and is never parsed."""
    registry = JobRegistry()
    registry.job("noop")(lambda payload, delivery: calls.record("noop", payload, delivery))
    app = create_app({**TEST_CONFIG, "QSTASH_MAX_BODY_SIZE": 100}, registry=registry)
    response = DeliveryClient(app).deliver("noop", {"data": "x" * 200})
    assert response.status_code == 489
    assert response.get_json()["code"] == "payload_too_large"
    assert len(calls) == 0


def test_subject_is_checked_against_app_url_not_host(client: DeliveryClient, calls: Calls) -> None:
    """A token made for the URL in the Host header is refused: only APP_URL counts."""
    body = b"{}"
    token = sign(body, url="http://attacker.test/api/jobs/noop", key=CURRENT_KEY)
    response = client.post(
        "/api/jobs/noop",
        data=body,
        headers={"Upstash-Signature": token, "Host": "attacker.test"},
    )
    assert response.status_code == 401
    assert response.get_json()["code"] == "subject_mismatch"
    assert "attacker.test" in response.get_json()["message"]
    assert len(calls) == 0


def test_with_qstash_guards_any_view_with_url_args_and_query() -> None:
    """with_qstash works on a plain Flask view; the signed URL includes path and query."""
    app = create_app(TEST_CONFIG, registry=JobRegistry())
    seen: list[tuple[Any, Delivery, str]] = []

    @app.post("/hooks/<tenant>")
    @with_qstash
    def hook(payload: Any, delivery: Delivery, tenant: str) -> dict[str, str]:
        seen.append((payload, delivery, tenant))
        return {"tenant": tenant}

    body = b'{"a":1}'
    url = APP_URL + "/hooks/acme?priority=high&x=%20y"
    client = app.test_client()
    response = client.post(
        "/hooks/acme?priority=high&x=%20y",
        data=body,
        headers={"Upstash-Signature": sign(body, url=url, key=CURRENT_KEY)},
    )
    assert response.status_code == 200
    assert seen[0][0] == {"a": 1} and seen[0][2] == "acme"
    assert seen[0][1].job == "hook"
    refused = client.post(
        "/hooks/acme?priority=low",
        data=body,
        headers={"Upstash-Signature": sign(body, url=url, key=CURRENT_KEY)},
    )
    assert refused.status_code == 401 and len(seen) == 1


def test_unknown_job_and_method_answer_json(client: DeliveryClient) -> None:
    """Unknown paths and methods under /api/ answer the framework's JSON errors."""
    missing = client.post("/api/jobs/no-such-job", data=b"{}")
    assert missing.status_code == 404 and missing.get_json()["code"] == "not_found"
    wrong = client.get("/api/jobs/noop")
    assert wrong.status_code == 405 and wrong.get_json()["status"] == 405
    assert "POST" in wrong.headers["Allow"]


def test_healthz_reports_readiness_without_secrets(app: Flask, client: DeliveryClient) -> None:
    """GET /healthz lists the jobs and signing mode, never a key."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "jobs": ["crash", "give-up", "later", "noop", "resize"],
        "signing": "keys",
    }
    assert CURRENT_KEY not in response.get_data(as_text=True)
