"""The duplicate-delivery guard: a delivery hook that runs each (job, message id) once.

Before the handler: claim the message (:data:`app.store.claims.CLAIM`, one statement on
an autocommit connection, see :mod:`app.store.direct`). Won → run the handler; after a
2xx answer the claim is marked done with that answer, after any other answer it is
released so QStash's retry runs the handler again; both are queued for the store's
writer (:mod:`app.store.writer`), off the delivery's path. Already done → answer 200
with the stored answer, handler not run.
Running elsewhere under a live lease → 503 + ``Retry-After``. A claim whose lease expired
(its worker crashed) is taken over. Jobs opt out with ``@job(..., dedupe=False)``.

The guard fails closed: when the database cannot be reached it answers 503 (QStash
retries later) rather than risk running a side effect twice.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, NamedTuple

from flask import Response, current_app
from sqlalchemy import Engine

from app.answers import error_response
from app.store import claims
from app.store.direct import Connections, Prepared
from app.store.engine import write_lock
from app.store.writer import Pending, Writer

if TYPE_CHECKING:
    from app.delivery import Delivery
    from app.jobs import Job

logger = logging.getLogger(__name__)

#: The width of ``claims.message_id``.
MESSAGE_ID_LIMIT = 200
_UNAVAILABLE_RETRY_AFTER = 10


#: The response header the duplicate guard sets when it answered instead of the handler.
GUARD_HEADER = "X-Duplicate-Delivery"
_GUARD_VERDICT = "qstash_jobs_guard_verdict"


def mark_guard_answer(response: Response, verdict: str) -> Response:
    """Mark ``response`` as the duplicate guard's (``replayed`` or ``busy``): in the
    header, for QStash's logs and the caller, and as an attribute, for the hooks."""
    response.headers[GUARD_HEADER] = verdict
    setattr(response, _GUARD_VERDICT, verdict)
    return response


def guard_verdict(response: Response) -> str | None:
    """Return the guard's verdict on ``response``, or None when the handler answered.

    Read by the log and metrics hooks on every delivery: an attribute, because looking
    the header up raises and catches a KeyError when it is absent, the usual case.
    """
    verdict: str | None = getattr(response, _GUARD_VERDICT, None)
    return verdict


class _Held(NamedTuple):
    """A claim this process won for a delivery, until its answer completes or releases it."""

    delivery: Delivery  # kept alive: no other delivery can take its id meanwhile
    job: str
    message_id: str
    token: str


def _now_ms() -> int:
    return int(time.time() * 1000)


class DuplicateGuard:
    """The delivery hook that claims each message before its handler runs."""

    def __init__(self, engine: Engine, writer: Writer, lease_seconds: float) -> None:
        self.engine = engine  # autocommit: one statement, one round trip per claim
        self.connections = Connections(engine)
        self._claim = Prepared(claims.CLAIM[engine.dialect.name], engine)
        self.writer = writer
        self.lease_seconds = lease_seconds
        # Registered job -> its lease in ms, None if it opted out. A registry refuses to
        # register a name twice, so an entry never goes stale.
        self._leases: dict[str, int | None] = {}
        # id(delivery) -> the claim won for it, not yet completed or released: cheaper
        # than flask.g (a context-local proxy) on every delivery. The entry keeps its
        # delivery alive, so no other delivery can have that id meanwhile.
        self._held: dict[int, _Held] = {}

    def before_handler(self, delivery: Delivery) -> Response | None:
        """Claim the delivery's message; answer instead of the handler when not ours."""
        job, message_id = delivery.job, delivery.message_id
        if job is None or message_id is None:
            return None
        lease_ms = self._lease_ms(job)
        if lease_ms is None:
            return None
        if len(message_id) > MESSAGE_ID_LIMIT:
            # Not a QStash id (they are short); the header is not signed, so say so and run.
            logger.warning(
                "message id longer than %d characters: not deduplicated", MESSAGE_ID_LIMIT
            )
            return None
        try:
            result = self.claim(job, message_id, lease_ms)
        except Exception:
            logger.exception("duplicate guard: the claim store is unavailable")
            return _unavailable()
        if isinstance(result, claims.Acquired):
            self._held[id(delivery)] = _Held(delivery, job, message_id, result.token)
            if result.takeover:
                logger.warning(
                    "took over the expired claim on %s message %s (its worker died?)",
                    job,
                    message_id,
                )
            return None
        return _answer(result)

    def after_delivery(
        self, job: str | None, delivery: Delivery | None, response: Response, duration: float
    ) -> None:
        """Complete our claim with a 2xx answer, release it after any other answer."""
        held = self._held.pop(id(delivery), None)  # id(None) is never a key
        if held is None:
            return
        if 200 <= response.status_code < 300:
            answer = claims.Completed(
                status=response.status_code,
                content_type=response.content_type,
                body=response.get_data(),
            )
            due = self.complete(held.job, held.message_id, held.token, answer)
        else:
            due = self.release(held.job, held.message_id, held.token)
        if due:  # written once the answer has gone out (see app.store.writer)
            response.call_on_close(self.writer.flush)

    def claim(self, job: str, message_id: str, lease_ms: int) -> claims.Claim:
        """Claim (job, message_id), or say why not: one statement, unless this process
        has an update of that claim still queued."""
        queued = self.writer.pending((job, message_id))
        if queued is not None:
            if queued.answer is not None:
                return queued.answer  # done here, not yet written
            # Released here, not yet written. QStash retries seconds later; a quicker
            # retry (tests, a client) waits for the write rather than finding it busy.
            self.writer.flush()
        params = claims.claim_params(job, message_id, now_ms=_now_ms(), lease_ms=lease_ms)
        with write_lock(self.engine), self.connections.connection() as driver:
            [row] = self._claim.rows(driver, params)
        return claims.verdict(row, params)

    def complete(self, job: str, message_id: str, token: str, answer: claims.Completed) -> bool:
        """Queue marking our claim done with ``answer``; say if a write is due."""
        params = claims.completion(
            job,
            message_id,
            token,
            now_ms=_now_ms(),
            status=answer.status,
            content_type=answer.content_type,
            body=answer.body,
        )
        return self.writer.queue((job, message_id), Pending(params, answer))

    def release(self, job: str, message_id: str, token: str) -> bool:
        """Queue giving our claim up, so that QStash's retry runs the handler; say if a
        write is due."""
        pending = Pending(claims.ours(job, message_id, token), None)
        return self.writer.queue((job, message_id), pending)

    def _lease_ms(self, name: str) -> int | None:
        """Return the lease of ``name``'s claims in ms; None if the job opted out."""
        if name in self._leases:
            return self._leases[name]
        registry = current_app.extensions.get("qstash_jobs")
        job: Job | None = registry[name] if registry is not None and name in registry else None
        if job is not None and not job.dedupe:
            lease_ms = None
        else:
            lease = job.lease_seconds(self.lease_seconds) if job else self.lease_seconds
            lease_ms = int(lease * 1000)
        if job is not None:  # an unregistered name may be registered later: ask again
            self._leases[name] = lease_ms
        return lease_ms


def _answer(result: claims.Completed | claims.Busy) -> Response:
    """Answer for the handler: the stored answer of a completed message, or busy."""
    if isinstance(result, claims.Completed):
        stored = Response(result.body, status=result.status, content_type=result.content_type)
        return mark_guard_answer(stored, "replayed")
    busy = error_response(
        503,
        "delivery_in_progress",
        "this message is being handled by another worker; QStash will retry",
        headers={"Retry-After": str(result.retry_after)},
    )
    return mark_guard_answer(busy, "busy")


def _unavailable() -> Response:
    return error_response(
        503,
        "guard_unavailable",
        "the duplicate-delivery guard cannot reach its database; QStash will retry",
        headers={"Retry-After": str(_UNAVAILABLE_RETRY_AFTER)},
    )
