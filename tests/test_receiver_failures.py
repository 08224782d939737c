"""Whatever fails between the claim and the answer, the answer is clean JSON and every
after-delivery hook runs: the duplicate guard releases its claim (the redelivery runs the
handler, not ``503 delivery_in_progress``), the log keeps a row and the metrics count it.

Each case uses a real ``DuplicateGuard`` on SQLite, the delivery log and the metrics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, abort
from marshmallow import Schema, ValidationError, fields, validates
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from app import create_app
from app.delivery import Delivery
from app.errors import JobError, NonRetryableError, RetryLater
from app.hooks import add_delivery_hook
from app.jobs import JobRegistry
from app.qstash.protocol import MAX_RETRIED
from app.store import Store, get_store
from app.store.schema import claims, deliveries
from app.testing import DeliveryClient
from tests.conftest import TEST_CONFIG
from tests.ops.conftest import close_store, ops_config

ONE_DAY = 86_400


class Boom(Exception):
    """What a buggy hook or schema raises."""


class WorkerAbort(BaseException):
    """Like gunicorn's SystemExit on a worker timeout: not an ``Exception``."""


def _not_json(delivery: Delivery) -> Any:
    return {"when": object()}


def _nan(delivery: Delivery) -> Any:
    return {"ratio": math.nan}


def _deep(delivery: Delivery) -> Any:
    value: list[Any] = []
    for _ in range(100_000):
        value = [value]
    return value


def _retry(after: Any) -> Callable[[Delivery], Any]:
    def first(delivery: Delivery) -> Any:
        raise RetryLater("upstream asked to wait", after=after)

    return first


def _raise(exc: Exception) -> Callable[[Delivery], Any]:
    def first(delivery: Delivery) -> Any:
        raise exc

    return first


def _exponential(delivery: Delivery) -> Any:
    raise RetryLater("backing off", after=2**delivery.retried)


#: name -> (what the first attempt does, status, error code).
FIRST_ATTEMPTS: dict[str, tuple[Callable[[Delivery], Any], int, str]] = {
    "RetryLater(after=inf)": (_retry(math.inf), 503, "retry_later"),
    "RetryLater(after=float('1e999'))": (_retry(float("1e999")), 503, "retry_later"),
    "RetryLater(after=-inf)": (_retry(-math.inf), 503, "retry_later"),
    "RetryLater(after=nan)": (_retry(math.nan), 503, "retry_later"),
    "RetryLater(after=10**400)": (_retry(10**400), 503, "retry_later"),
    "RetryLater(after=-(10**400))": (_retry(-(10**400)), 503, "retry_later"),
    "RetryLater(after=Decimal('1e99999'))": (_retry(Decimal("1e99999")), 503, "retry_later"),
    "RetryLater(after=Decimal('sNaN'))": (_retry(Decimal("sNaN")), 503, "retry_later"),
    "RetryLater(after=Fraction(10**400, 3))": (_retry(Fraction(10**400, 3)), 503, "retry_later"),
    "RetryLater(after=timedelta.max)": (_retry(timedelta.max), 503, "retry_later"),
    "RetryLater(after=timedelta.min)": (_retry(timedelta.min), 503, "retry_later"),
    "RetryLater(after=naive datetime.max)": (_retry(datetime.max), 503, "retry_later"),
    "RetryLater(after=naive datetime.min)": (_retry(datetime.min), 503, "retry_later"),
    "RetryLater(after=aware datetime.max)": (
        _retry(datetime.max.replace(tzinfo=UTC)),
        503,
        "retry_later",
    ),
    "RetryLater(after=2**retried), Upstash-Retried: 1100": (_exponential, 503, "retry_later"),
    "a result that is not JSON": (_not_json, 500, "internal_error"),
    "a result holding NaN": (_nan, 500, "internal_error"),
    "a result nested 100000 deep": (_deep, 500, "internal_error"),
    "NonRetryableError whose errors are not JSON": (
        _raise(NonRetryableError("gone", errors={"at": object()})),
        489,
        "non_retryable",
    ),
    "NonRetryableError whose errors hold NaN": (
        _raise(NonRetryableError("gone", errors={"ratio": math.nan})),
        489,
        "non_retryable",
    ),
    "ValidationError whose messages are not JSON": (
        _raise(ValidationError({"field": [object()]})),
        489,
        "invalid_payload",
    ),
    "JobError whose message is not a string": (
        _raise(JobError(object())),  # type: ignore[arg-type]
        489,
        "job_error",
    ),
    "RetryLater with errors that are not JSON": (
        _raise(RetryLater("later", after=5, errors={1j: 2})),
        503,
        "retry_later",
    ),
    "abort(400) in the handler": (lambda delivery: abort(400), 400, "http_error"),
    "a plain exception": (_raise(Boom("boom")), 500, "internal_error"),
}


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., tuple[Flask, list[str]]]]:
    """Build an app whose ``flaky`` job does ``first`` on its first run, then returns ok."""
    made: list[Flask] = []

    def make(
        first: Callable[[Delivery], Any], schema: type[Schema] | None = None
    ) -> tuple[Flask, list[str]]:
        runs: list[str] = []
        registry = JobRegistry()

        @registry.job("flaky", schema=schema)
        def flaky(payload: Any, delivery: Delivery) -> Any:
            runs.append(delivery.message_id or "")
            return first(delivery) if len(runs) == 1 else {"ok": True}

        app = create_app(ops_config(f"sqlite:///{tmp_path}/f.sqlite3"), registry=registry)
        made.append(app)
        return app, runs

    yield make
    for app in made:
        close_store(app)


def _store(app: Flask) -> Store:
    store = get_store(app)
    assert store is not None and store.guard is not None
    return store


def log_rows(app: Flask) -> list[Any]:
    store = _store(app)
    assert store.flush()
    with store.read() as conn:
        return list(conn.execute(select(deliveries).order_by(deliveries.c.id)))


def running_claims(app: Flask) -> list[Any]:
    assert _store(app).flush()  # releases are queued for the store's writer
    with _store(app).read() as conn:
        return list(conn.execute(select(claims).where(claims.c.state == "running")))


def counted(client: DeliveryClient, job: str, outcome: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "qstash_deliveries_total" and sample.labels == {
                "job": job,
                "outcome": outcome,
            }:
                return sample.value
    return 0.0


def assert_error_shape(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"code", "status", "message", "errors"}
    assert (body["code"], body["status"]) == (code, status)
    assert isinstance(body["message"], str) and isinstance(body["errors"], dict)
    assert b"NaN" not in response.get_data() and b"Infinity" not in response.get_data()


@pytest.mark.parametrize("name", list(FIRST_ATTEMPTS))
def test_failure_answers_json_and_the_redelivery_runs_the_handler(
    name: str, make_app: Callable[..., tuple[Flask, list[str]]]
) -> None:
    """The failed attempt answers clean JSON; its claim is released, logged and counted."""
    first, status, code = FIRST_ATTEMPTS[name]
    app, runs = make_app(first)
    client = DeliveryClient(app)
    headers = {"Upstash-Retried": "1100"}
    response = client.deliver("flaky", {}, message_id="msg_flaky", headers=headers)
    assert_error_shape(response, status, code)
    if status == 503:
        assert 1 <= int(response.headers["Retry-After"]) <= ONE_DAY
    assert running_claims(app) == []

    again = client.deliver("flaky", {}, message_id="msg_flaky", retried=1)
    assert again.status_code == 200 and again.get_json() == {"ok": True}
    assert runs == ["msg_flaky", "msg_flaky"]
    first_row, second_row = log_rows(app)
    assert (first_row.message_id, first_row.status, first_row.guard) == ("msg_flaky", status, None)
    assert first_row.error.startswith(f"{code}: ")
    assert second_row.status == 200
    outcome = {503: "retry", 489: "non-retryable"}.get(status, "error")
    assert counted(client, "flaky", outcome) == 1


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (math.inf, ONE_DAY),
        (-math.inf, 1),
        (math.nan, ONE_DAY),
        (10**400, ONE_DAY),
        (ONE_DAY, ONE_DAY),
        (ONE_DAY + 0.5, ONE_DAY),
        (ONE_DAY - 0.5, ONE_DAY),
        (ONE_DAY - 1, ONE_DAY - 1),
        (1.000001, 2),
        (0.5, 1),
        (0, 1),
        (Decimal("2.5"), 3),
        (Fraction(7, 2), 4),
        (True, 1),
        (timedelta.max, ONE_DAY),
        (timedelta(days=-3), 1),
        (timedelta(seconds=90, microseconds=1), 91),
    ],
)
def test_retry_after_is_clamped_to_qstash_limits(after: Any, expected: int) -> None:
    """Retry-After is whole seconds in [1 s, 1 day], QStash's range, whatever ``after`` is."""
    assert RetryLater(after=after).retry_after_seconds == expected


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (lambda: datetime.max, ONE_DAY),
        (lambda: datetime.min, 1),
        (lambda: datetime.max.replace(tzinfo=UTC), ONE_DAY),
        (lambda: datetime.min.replace(tzinfo=UTC), 1),
        (lambda: datetime.now(UTC) + timedelta(days=2), ONE_DAY),
        (lambda: datetime.now(UTC) - timedelta(days=2), 1),
    ],
)
def test_retry_after_datetime_is_clamped(after: Callable[[], datetime], expected: int) -> None:
    """A datetime at either end of time still gives a Retry-After within QStash's range."""
    assert RetryLater(after=after()).retry_after_seconds == expected


@pytest.mark.parametrize("after", ["90", None, b"1", [1], {"s": 1}, 1j])
def test_retry_later_refuses_what_is_not_a_delay(after: Any) -> None:
    """RetryLater takes seconds, a timedelta or a datetime: anything else is a TypeError."""
    with pytest.raises(TypeError, match="after must be"):
        RetryLater(after=after)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", 0),
        ("3", 3),
        ("007", 7),
        (str(MAX_RETRIED), MAX_RETRIED),
        (str(MAX_RETRIED + 1), MAX_RETRIED),
        ("1100", MAX_RETRIED),
        ("9" * 5000, MAX_RETRIED),
        ("0" * 5000 + "4", 4),
        ("", 0),
        ("abc", 0),
        ("-1", 0),
        ("+5", 0),
        ("1_0", 0),
        ("0x10", 0),
        ("1e3", 0),
        ("3.0", 0),
        ("\u0663", 0),  # ARABIC-INDIC DIGIT THREE: int() would take it
        ("\u00b2", 0),  # SUPERSCRIPT TWO
    ],
)
def test_retried_header_is_ascii_digits_and_bounded(raw: str, expected: int) -> None:
    """Upstash-Retried is unsigned: only ASCII digits count, and at most MAX_RETRIED."""
    registry = JobRegistry()
    seen: list[Delivery] = []
    registry.job("noop")(lambda payload, delivery: seen.append(delivery))
    app = create_app(TEST_CONFIG, registry=registry)
    response = DeliveryClient(app).deliver(
        "noop", {}, headers={"Upstash-Retried": raw.encode().decode("latin-1")}
    )
    assert response.status_code == 200
    assert seen[0].retried == expected
    assert 2.0 ** seen[0].retried < math.inf and math.exp(2.5 * seen[0].retried) < math.inf


def test_a_later_hook_failing_before_the_handler_releases_the_claim(
    make_app: Callable[..., tuple[Flask, list[str]]],
) -> None:
    """A hook after the guard raising in before_handler: 500, and the claim is released."""
    app, runs = make_app(lambda delivery: {"ok": True})

    class FailsOnce:
        failed = False

        def before_handler(self, delivery: Delivery) -> Response | None:
            if not self.failed:
                self.failed = True
                raise Boom("metrics backend down")
            return None

        def after_delivery(self, *args: Any) -> None:
            return None

    add_delivery_hook(app, FailsOnce())
    client = DeliveryClient(app)
    response = client.deliver("flaky", {}, message_id="msg_hook")
    assert_error_shape(response, 500, "internal_error")
    assert runs == [] and running_claims(app) == []
    assert client.deliver("flaky", {}, message_id="msg_hook").status_code == 200
    assert runs == ["msg_hook"]
    assert [row.status for row in log_rows(app)] == [500, 200]


def test_a_schema_that_crashes_answers_500_and_is_logged(
    make_app: Callable[..., tuple[Flask, list[str]]],
) -> None:
    """A schema raising something other than ValidationError is a bug: 500, logged, counted."""

    class Crashing(Schema):
        name = fields.String()

        @validates("name")
        def _check(self, value: str, **kwargs: Any) -> None:
            raise Boom("validator bug")

    app, runs = make_app(lambda delivery: {"ok": True}, schema=Crashing)
    client = DeliveryClient(app)
    response = client.deliver("flaky", {"name": "x"}, message_id="msg_schema")
    assert_error_shape(response, 500, "internal_error")
    assert runs == []
    [row] = log_rows(app)
    assert (row.status, row.message_id) == (500, "msg_schema")
    assert counted(client, "flaky", "error") == 1


def test_an_exception_that_is_not_an_exception_still_releases_the_claim(
    make_app: Callable[..., tuple[Flask, list[str]]], caplog: pytest.LogCaptureFixture
) -> None:
    """A BaseException (a worker being stopped) propagates, but the hooks run first."""

    def first(delivery: Delivery) -> Any:
        raise WorkerAbort()

    app, runs = make_app(first)
    client = DeliveryClient(app)
    with caplog.at_level(logging.ERROR), pytest.raises(WorkerAbort):
        client.deliver("flaky", {}, message_id="msg_abort")
    assert running_claims(app) == []
    assert client.deliver("flaky", {}, message_id="msg_abort").status_code == 200
    assert runs == ["msg_abort", "msg_abort"]
    stopped, done = log_rows(app)
    assert (stopped.job, stopped.status, done.status) == ("flaky", 500, 200)
    assert stopped.error.startswith("internal_error: job 'flaky' raised WorkerAbort;")
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "job flaky failed: message_id=msg_abort retried=0"
    ]
