"""Structured hostile requests through the whole receiver, with the real store behind it.

Hypothesis builds requests from parts: bodies as JSON trees (deeply nested too, with
NaN and huge numbers), raw bytes, empty bodies; header sets of ``Upstash-*`` values of
its choosing; a valid, forged, missing or garbage signature; Content-Length or chunked
framing. Whatever arrives, the answer is 200, 401, 489, 503 or 500 with the framework's
JSON, never an unhandled exception; no claim of the duplicate guard stays held; and a
request refused before verification writes no log row.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, fields
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from app import create_app
from app.delivery import Delivery
from app.errors import NonRetryableError, RetryLater
from app.hooks import refusal_reasons
from app.jobs import JobRegistry
from app.qstash.signature import sign
from app.store import Store, get_store
from app.store.guard import guard_verdict
from app.store.schema import deliveries
from app.testing import DeliveryClient
from tests.conftest import APP_URL, CURRENT_KEY
from tests.ops.conftest import close_store, ops_config

MAX_BODY = 4096
ANSWERS = {200, 401, 489, 500, 503}


class Item(Schema):
    name = fields.String(required=True)
    count = fields.Integer(load_default=1)
    tags = fields.List(fields.String())
    extra = fields.Dict()


def registry() -> JobRegistry:
    jobs = JobRegistry()

    @jobs.job("echo")
    def echo(payload: Any, delivery: Delivery) -> Any:
        return {"payload": payload, "retried": delivery.retried}

    @jobs.job("item", schema=Item)
    def item(payload: Any, delivery: Delivery) -> Any:
        return {"name": payload["name"]}

    @jobs.job("wait")
    def wait(payload: Any, delivery: Delivery) -> Any:
        after = payload.get("after") if isinstance(payload, dict) else payload
        raise RetryLater("asked to wait", after=after if after is not None else 2**delivery.retried)

    @jobs.job("refuse")
    def refuse(payload: Any, delivery: Delivery) -> Any:
        raise NonRetryableError("never", errors={"payload": payload})

    @jobs.job("crash")
    def crash(payload: Any, delivery: Delivery) -> Any:
        raise RuntimeError(repr(payload)[:50])

    return jobs


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    folder: Path = tmp_path_factory.mktemp("hostile")
    config = ops_config(f"sqlite:///{folder}/h.sqlite3", QSTASH_MAX_BODY_SIZE=MAX_BODY)
    flask_app = create_app(config, registry=registry())
    yield flask_app
    close_store(flask_app)


def _store(app: Flask) -> Store:
    store = get_store(app)
    assert store is not None and store.guard is not None and store.log is not None
    return store


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats()
    | st.text(max_size=20)
)
JSON_TREES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
NEAR_ITEMS = st.fixed_dictionaries(
    {}, optional={name: JSON_TREES for name in ("name", "count", "tags", "extra", "after")}
)


def _nested(depth: int, kind: str) -> bytes:
    open_, close = ("[", "]") if kind == "list" else ('{"a":', "}")
    return (open_ * depth + "1" + close * depth).encode()


BODIES = st.one_of(
    (JSON_TREES | NEAR_ITEMS).map(lambda value: json.dumps(value).encode()),
    st.builds(_nested, st.integers(min_value=1, max_value=2000), st.sampled_from(["list", "dict"])),
    st.sampled_from(
        [
            b"",
            b"   ",
            b'{"after": 1e999}',
            b'{"after": -1e999}',
            b'{"after": NaN}',
            b'{"after": ' + b"9" * 4000 + b"}",
            b'{"name": "x", "count": 1e999}',
            b"[" * 100_000,
            b"\xff\xfe\x00",
            b"x" * MAX_BODY,
            b"x" * (MAX_BODY + 1),
        ]
    ),
    st.binary(max_size=64),
)
# Header values a WSGI server could hand over: latin-1 text without line breaks.
HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=40,
)
RETRIED = st.one_of(
    st.integers(min_value=-5, max_value=10**6).map(str),
    st.sampled_from(["1100", "9" * 500, "٣", "³", " 7 ", "1_0", "+5", "0x10", ""]),
    HEADER_TEXT,
)
UPSTASH_HEADERS = st.fixed_dictionaries(
    {"Upstash-Message-Id": st.one_of(st.just("msg_fixed"), HEADER_TEXT.filter(bool))},
    optional={
        "Upstash-Retried": RETRIED,
        "Upstash-Schedule-Id": HEADER_TEXT,
        "Upstash-Caller-Ip": HEADER_TEXT,
        "Upstash-Topic-Name": HEADER_TEXT,
        "Upstash-Region": HEADER_TEXT,
        "Content-Type": st.sampled_from(["application/json", "text/plain", "x/y; charset=7"]),
    },
)
SIGNING = st.sampled_from(["valid", "missing", "garbage", "other key", "other body", "other job"])
JOBS = st.sampled_from(["echo", "item", "wait", "refuse", "crash"])


def _signature(how: str, body: bytes, path: str) -> str | None:
    url = APP_URL + path
    if how == "missing":
        return None
    if how == "garbage":
        return "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"
    key = "sig_attacker_0123456789abcdefghij" if how == "other key" else CURRENT_KEY
    if how == "other job":
        url = APP_URL + "/api/jobs/echo2"
    return sign(body + b" " if how == "other body" else body, url=url, key=key)


def _send(
    client: DeliveryClient, job: str, body: bytes, headers: dict[str, str], chunked: bool
) -> Any:
    path = f"/api/jobs/{job}"
    if not chunked:
        return client.post(path, data=body, headers=headers)
    # What gunicorn hands over for Transfer-Encoding: chunked: no Content-Length, and
    # wsgi.input_terminated so that the stream is read to its end.
    return client.post(
        path,
        input_stream=io.BytesIO(body),
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def _log_count(store: Store) -> int:
    assert store.flush()
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(deliveries)).scalar_one())


def assert_claim_free(app: Flask, job: str, message_id: str) -> None:
    """The guard can claim ``message_id`` now (then gives it back), or replays its answer."""
    guard = _store(app).guard
    assert guard is not None
    probe = Delivery(
        message_id=message_id,
        retried=0,
        schedule_id=None,
        caller_ip=None,
        topic_name=None,
        region=None,
        body=b"",
        url=APP_URL,
        job=job,
    )
    with app.test_request_context():
        answer = guard.before_handler(probe)
        if answer is None:  # won the claim: nobody held it
            guard.after_delivery(job, probe, Response(status=500), 0.0)
        else:
            assert guard_verdict(answer) == "replayed", answer.get_data(as_text=True)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    job=JOBS,
    body=BODIES,
    headers=UPSTASH_HEADERS,
    signing=SIGNING,
    chunked=st.booleans(),
)
def test_hostile_requests_get_a_clean_answer_and_leave_nothing_held(
    app: Flask, job: str, body: bytes, headers: dict[str, str], signing: str, chunked: bool
) -> None:
    """Any request: a known status with the JSON error shape, no held claim, no stray row."""
    store = _store(app)
    client = DeliveryClient(app)
    token = _signature(signing, body, f"/api/jobs/{job}")
    if token is not None:
        headers = {**headers, "Upstash-Signature": token}
    rows_before = _log_count(store)

    response = _send(client, job, body, headers, chunked)

    assert response.status_code in ANSWERS, response.get_data(as_text=True)
    answer = response.get_json(silent=True)
    assert isinstance(answer, dict), response.get_data()
    if response.status_code != 200:
        assert set(answer) == {"code", "status", "message", "errors"}
        assert answer["status"] == response.status_code
    if response.status_code == 503 and guard_verdict(response) is None:
        assert 1 <= int(response.headers["Retry-After"]) <= 86_400
    verified = signing == "valid" and len(body) <= MAX_BODY
    if verified:
        assert response.status_code != 401
        assert _log_count(store) == rows_before + 1
    else:
        assert response.status_code == (489 if len(body) > MAX_BODY else 401)
        assert _log_count(store) == rows_before
    message_id = headers["Upstash-Message-Id"]
    if len(message_id) <= 200:
        assert_claim_free(app, job, message_id)


ALLOWED_LABELS = {
    "job": {"echo", "item", "wait", "refuse", "crash"},
    "outcome": {"ok", "retry", "non-retryable", "bad-signature", "error"},
    "answer": {"replayed", "busy"},
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job=JOBS, body=BODIES, headers=UPSTASH_HEADERS, signing=SIGNING)
def test_metric_labels_never_take_a_value_the_caller_chose(
    app: Flask, job: str, body: bytes, headers: dict[str, str], signing: str
) -> None:
    """Every label of every sample is a job of ours or one of our codes, whatever was sent."""
    client = DeliveryClient(app)
    token = _signature(signing, body, f"/api/jobs/{job}")
    if token is not None:
        headers = {**headers, "Upstash-Signature": token}
    client.post(f"/api/jobs/{job}", data=body, headers=headers)
    text = client.get("/metrics").get_data(as_text=True)
    allowed = {**ALLOWED_LABELS, "reason": refusal_reasons()}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for name, value in sample.labels.items():
                if name in allowed:
                    assert value in allowed[name], (name, value)
                else:
                    assert name in {"le", "quantile"}, name
                    assert value == "+Inf" or math.isfinite(float(value))
