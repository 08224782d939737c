"""Delivery hooks: the extension point for the delivery log, duplicate guard and metrics."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask, Response, jsonify

from app.delivery import Delivery
from app.hooks import add_delivery_hook, outcome
from app.testing import DeliveryClient
from tests.conftest import Calls


class Recorder:
    """A hook that records what it sees and can answer early."""

    def __init__(self, early: Response | None = None, fail: bool = False) -> None:
        self.seen: list[tuple[str | None, Delivery | None, int, float]] = []
        self.early = early
        self.fail = fail

    def before_handler(self, delivery: Delivery) -> Response | None:
        return self.early

    def after_delivery(
        self, job: str | None, delivery: Delivery | None, response: Response, duration: float
    ) -> None:
        if self.fail:
            raise RuntimeError("log database is down")
        self.seen.append((job, delivery, response.status_code, duration))


@pytest.mark.parametrize(
    ("job", "payload", "headers", "expected"),
    [
        ("noop", {}, {}, "ok"),
        ("later", {}, {}, "retry"),
        ("give-up", {}, {}, "non-retryable"),
        ("resize", {"bad": 1}, {}, "non-retryable"),
        ("crash", {}, {}, "error"),
        ("noop", {}, {"Upstash-Signature": "forged"}, "bad-signature"),
    ],
)
def test_after_delivery_sees_every_outcome(
    app: Flask, job: str, payload: Any, headers: dict[str, str], expected: str
) -> None:
    """Every delivery, refused or not, is reported once with its status and duration."""
    hook = Recorder()
    add_delivery_hook(app, hook)
    DeliveryClient(app).deliver(job, payload, headers=headers, message_id="msg_h")
    [(seen_job, delivery, status, duration)] = hook.seen
    assert seen_job == job and 0 <= duration < 5
    assert outcome(status, verified=delivery is not None) == expected
    if expected == "bad-signature":
        assert delivery is None
    else:
        assert delivery is not None and delivery.message_id == "msg_h"


def test_before_handler_can_answer_instead_of_the_handler(app: Flask, calls: Calls) -> None:
    """A hook's early response is returned and the handler does not run."""
    with app.app_context():
        early = jsonify(cached=True)
    add_delivery_hook(app, Recorder(early=early))
    response = DeliveryClient(app).deliver("noop", {})
    assert response.get_json() == {"cached": True}
    assert len(calls) == 0


def test_failing_observer_never_changes_the_answer(
    app: Flask, calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in after_delivery is logged, naming the hook; the delivery still answers 200."""
    hook = Recorder(fail=True)
    add_delivery_hook(app, hook)
    with caplog.at_level(logging.ERROR):
        response = DeliveryClient(app).deliver("noop", {})
    assert response.status_code == 200
    assert len(calls) == 1
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == f"delivery hook {hook!r} failed"
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
