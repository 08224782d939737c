"""Jobs whose outcomes exercise every retry path of the dev server."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from app.delivery import Delivery
from app.errors import NonRetryableError, RetryLater
from app.jobs import job
from app.qstash.callbacks import Callback, CallbackSchema


def record(name: str, delivery: Delivery, payload: Any = None) -> int:
    """Append this attempt to ``<name>.jsonl``; return how many attempts its message had."""
    path = Path(os.environ["FIXTURE_STATE_DIR"]) / f"{name}.jsonl"
    line = {
        "message_id": delivery.message_id,
        "retried": delivery.retried,
        "at": time.time(),
        "schedule_id": delivery.schedule_id,
        "payload": payload,
    }
    with path.open("a") as sink:
        sink.write(json.dumps(line) + "\n")
    with path.open() as source:
        return sum(1 for row in source if json.loads(row)["message_id"] == delivery.message_id)


@job("flaky")
def flaky(payload: Any, delivery: Delivery) -> dict[str, int]:
    """Fail the first two attempts of each message, then succeed."""
    if record("flaky", delivery) <= 2:
        raise RuntimeError("not yet")
    return {"retried": delivery.retried}


@job("give-up")
def give_up(payload: Any, delivery: Delivery) -> None:
    """Refuse the message for good (489)."""
    record("give-up", delivery)
    raise NonRetryableError("the account is gone")


@job("later")
def later(payload: Any, delivery: Delivery) -> dict[str, bool]:
    """Ask for a retry in 90 s once, then succeed."""
    if record("later", delivery) == 1:
        raise RetryLater("upstream is rate limited", after=90)
    return {"ok": True}


@job("slow")
def slow(payload: Any, delivery: Delivery) -> dict[str, bool]:
    """Sleep ``payload["seconds"]`` before answering."""
    record("slow", delivery)
    time.sleep(float(payload["seconds"]))
    return {"ok": True}


@job("noop")
def noop(payload: Any, delivery: Delivery) -> dict[str, bool]:
    """Do nothing (benchmarks)."""
    return {"ok": True}


@job("callback-sink", schema=CallbackSchema)
def callback_sink(callback: Callback, delivery: Delivery) -> dict[str, bool]:
    """Record the (failure) callback QStash posted, as the app's own parser decodes it."""
    decoded = {
        "sourceMessageId": callback.source_message_id,
        "status": callback.status,
        "retried": callback.retried,
        "dlqId": callback.dlq_id,
        "url": callback.url,
        "body": callback.json_body(),
        "sourceBody": callback.json_source_body(),
        "sourceHeader": dict(callback.source_header),
    }
    record("callback-sink", delivery, decoded)
    return {"recorded": True}
