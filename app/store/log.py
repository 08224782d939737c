"""The delivery log: one row per delivery ``with_qstash`` answered, written in batches.

Only verified deliveries are logged: a request refused before its signature was checked
(401, or 489 for a body over the size limit) carries nothing but what an unauthenticated
caller chose, and nothing of it may reach the digest email or the dashboard. The metrics
count those refusals by reason.

``DeliveryLog.after_delivery`` only builds a row and queues it for the store's writer
(:mod:`app.store.writer`), which writes rows in batches from a thread of its own. A
delivery therefore never waits for the database and never fails because of it: when the
database is down or the queue is full, rows are dropped and counted, and one warning a
minute says so.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from flask import Response

from app.hooks import outcome
from app.store.guard import guard_verdict
from app.store.writer import Writer

if TYPE_CHECKING:
    from app.delivery import Delivery

logger = logging.getLogger(__name__)

_ERROR_LIMIT = 500
_ID_LIMIT = 200


def _clip(value: str | None, limit: int = _ID_LIMIT) -> str | None:
    return None if value is None else value[:limit]


def error_summary(response: Response) -> str | None:
    """Return ``code: message`` of a framework error response, or None for a success."""
    if response.status_code < 300:
        return None
    body = response.get_json(silent=True) if response.is_json else None
    if isinstance(body, dict) and "message" in body:
        return f"{body.get('code', 'error')}: {body['message']}"[:_ERROR_LIMIT]
    return f"HTTP {response.status_code}"


def delivery_row(
    job: str | None, delivery: Delivery, response: Response, duration: float
) -> dict[str, Any]:
    """Return the ``deliveries`` row describing one answered, verified delivery."""
    return {
        "at_ms": int((time.time() - duration) * 1000),
        "job": (job or "?")[:100],
        "message_id": _clip(delivery.message_id),
        "schedule_id": _clip(delivery.schedule_id),
        "retried": delivery.retried,
        "outcome": outcome(response.status_code),
        "status": response.status_code,
        "duration_ms": duration * 1000,
        "error": error_summary(response),
        "guard": guard_verdict(response),
        "dlq_id": None,
    }


class DeliveryLog:
    """The delivery hook that records every answered delivery."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    def before_handler(self, delivery: Delivery) -> Response | None:
        """Never answer early: the log only observes."""
        return None

    def after_delivery(
        self, job: str | None, delivery: Delivery | None, response: Response, duration: float
    ) -> None:
        """Queue the row for this delivery; never raise into the request.

        A request refused before verification (``delivery`` is None) is not logged.
        """
        if delivery is None:
            return
        try:
            if self.writer.submit(delivery_row(job, delivery, response, duration)):
                response.call_on_close(self.writer.flush)  # once the answer has gone out
        except Exception:
            logger.exception("could not queue a delivery log row")
