"""Shared fixtures: an app with a few test jobs and fixed, 32-byte signing keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from marshmallow import Schema, fields

from app import config, create_app
from app.delivery import Delivery
from app.errors import NonRetryableError, RetryLater
from app.jobs import JobRegistry
from app.testing import DeliveryClient

CURRENT_KEY = "sig_current_0123456789abcdefghijk"
NEXT_KEY = "sig_next_0123456789abcdefghijklmno"
APP_URL = "https://jobs.example.com"
TEST_CONFIG = {
    "TESTING": True,
    "QSTASH_CURRENT_SIGNING_KEY": CURRENT_KEY,
    "QSTASH_NEXT_SIGNING_KEY": NEXT_KEY,
    "APP_URL": APP_URL,
}


class ResizeSchema(Schema):
    file_key = fields.String(required=True, data_key="fileKey")
    target_width = fields.Integer(data_key="targetWidth", load_default=800)


class Calls:
    """Records every handler call, so tests can assert a handler did (not) run."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any, Delivery]] = []

    def record(self, job: str, payload: Any, delivery: Delivery) -> None:
        self.items.append((job, payload, delivery))

    def __len__(self) -> int:
        return len(self.items)


def make_registry(calls: Calls) -> JobRegistry:
    """Return a registry of small jobs covering every outcome the receiver maps."""
    registry = JobRegistry()

    @registry.job("resize", schema=ResizeSchema, retries=2)
    def resize(payload: dict[str, Any], delivery: Delivery) -> dict[str, Any]:
        calls.record("resize", payload, delivery)
        return {"width": payload["target_width"], "attempt": delivery.attempt}

    @registry.job("noop")
    def noop(payload: Any, delivery: Delivery) -> dict[str, bool]:
        calls.record("noop", payload, delivery)
        return {"ok": True}

    @registry.job("give-up")
    def give_up(payload: Any, delivery: Delivery) -> None:
        calls.record("give-up", payload, delivery)
        raise NonRetryableError("the account was deleted", errors={"account": "gone"})

    @registry.job("later")
    def later(payload: Any, delivery: Delivery) -> None:
        calls.record("later", payload, delivery)
        raise RetryLater("rate limited upstream", after=90)

    @registry.job("crash")
    def crash(payload: Any, delivery: Delivery) -> None:
        calls.record("crash", payload, delivery)
        raise RuntimeError("database password=hunter2 unreachable")

    return registry


@pytest.fixture(autouse=True)
def _no_store_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Apps made in tests keep no delivery log unless they ask (never in the repository)."""
    monkeypatch.setitem(config.DEFAULTS, "DELIVERY_LOG", False)
    monkeypatch.setitem(config.DEFAULTS, "DUPLICATE_GUARD", False)


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def app(calls: Calls) -> Iterator[Flask]:
    yield create_app(TEST_CONFIG, registry=make_registry(calls))


@pytest.fixture
def client(app: Flask) -> DeliveryClient:
    return DeliveryClient(app)
