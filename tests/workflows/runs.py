"""Helpers for the CLI, HTTP and dashboard tests: a workflow with every kind of step, and
delivering only what is due, so a run can be left waiting for a test to look at."""

from __future__ import annotations

from typing import Any

from flask import Flask
from marshmallow import Schema, fields

from app.errors import NonRetryableError
from app.jobs import JobRegistry
from app.store import get_store
from app.testing import DeliveryClient, StubQueue
from app.workflows import workflow


class Order(Schema):
    order = fields.String(required=True)
    qty = fields.Integer(load_default=1)


def fail(message: str) -> None:
    raise NonRetryableError(message)


def declare(jobs: JobRegistry) -> JobRegistry:
    """Add the workflow ``order`` (run, sleep, event, parallel) and a plain job to ``jobs``."""

    @workflow("order", schema=Order, registry=jobs)
    def order(ctx: Any, payload: Any) -> Any:
        price = ctx.run("price", lambda: {"total": payload["qty"] * 3, "note": payload["order"]})
        if payload["order"].startswith("fail"):
            ctx.run("refuse", fail, "<b>no</b> stock")
        ctx.sleep("cool-off", "1h")
        paid = ctx.wait_for_event("paid", f"paid:{payload['order']}", timeout="2d")
        shipped, mailed = ctx.parallel(("ship", lambda: "shipped"), ("mail", lambda: "mailed"))
        return {"price": price, "paid": paid, "done": [shipped, mailed]}

    @jobs.job("plain")
    def plain(payload: Any, delivery: Any) -> None:
        return None

    return jobs


def deliver_due(app: Flask, queue: StubQueue, *, advance: float = 0.0) -> None:
    """Move the virtual clock ``advance`` seconds on, then deliver what is due; leave timers
    that fall later pending."""
    queue.clock += advance
    client = DeliveryClient(app)
    while due := [m for m in queue.pending if m.due <= queue.clock]:
        for message in due:
            store = get_store(app)
            if store is not None:
                store.flush()  # as StubQueue.drain does: the store's queued writes first
            _, _, query = message.message.destination.partition("?")
            client.deliver(message.job, body=message.message.body,
                           message_id=message.message_id, query=query)  # fmt: skip
            message.state = "delivered"
