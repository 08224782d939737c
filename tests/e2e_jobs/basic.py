"""Small jobs with every outcome, for gunicorn end-to-end tests."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from app.delivery import Delivery
from app.errors import NonRetryableError
from app.jobs import job


class EchoSchema(Schema):
    webhook_id = fields.String(required=True, data_key="webhookId")


@job("echo", schema=EchoSchema)
def echo(payload: dict[str, Any], delivery: Delivery) -> dict[str, Any]:
    """Return the payload and delivery facts."""
    return {"webhookId": payload["webhook_id"], "retried": delivery.retried}


@job("noop")
def noop(payload: Any, delivery: Delivery) -> None:
    """Do nothing (the benchmark's guarded endpoint)."""


@job("give-up")
def give_up(payload: Any, delivery: Delivery) -> None:
    """Always refuse for good."""
    raise NonRetryableError("never going to work")
