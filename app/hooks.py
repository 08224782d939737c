"""Delivery hooks: how the store, the log and the metrics watch every delivery.

A hook is any object with ``before_handler(delivery)`` and ``after_delivery(job, delivery,
response, duration)`` (``DeliveryHook``); ``add_delivery_hook(app, hook)`` registers it and
the receiver calls every registered hook, in order, on each request. ``outcome`` and
``refusal`` are the shared vocabulary hooks label a response with.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Protocol

from app.qstash.errors import SignatureError

if TYPE_CHECKING:
    from flask import Flask, Response

    from app.delivery import Delivery

__all__ = [
    "BODY_REFUSALS",
    "DeliveryHook",
    "add_delivery_hook",
    "hooks_of",
    "mark_refused",
    "outcome",
    "refusal",
    "refusal_reasons",
]

HOOKS = "qstash_jobs.delivery_hooks"


class DeliveryHook(Protocol):
    """An observer of deliveries (the delivery log, the duplicate guard, metrics).

    Register one with ``add_delivery_hook(app, hook)``.
    """

    def before_handler(self, delivery: Delivery) -> Response | None:
        """Return a response to answer instead of running the handler, or None to run it.

        Called only for verified deliveries whose payload loaded. An exception here
        answers 500 (QStash retries) and the handler does not run.
        """

    def after_delivery(
        self, job: str | None, delivery: Delivery | None, response: Response, duration: float
    ) -> None:
        """Observe the answer to a request, whatever happened before it.

        ``delivery`` is None when the request was refused before its signature was
        verified: then everything it carries is the unauthenticated caller's, and only
        :func:`refusal` (a fixed set of codes) may be kept. Exceptions are logged and
        never change the answer.
        """


def add_delivery_hook(app: Flask, hook: DeliveryHook) -> None:
    """Register ``hook`` to observe every delivery ``with_qstash`` handles in ``app``."""
    app.extensions.setdefault(HOOKS, []).append(hook)


def hooks_of(app: Flask) -> list[DeliveryHook]:
    """Return the hooks registered on ``app``, in the order they run."""
    hooks: list[DeliveryHook] = app.extensions.get(HOOKS, [])
    return hooks


def outcome(status: int, *, verified: bool = True) -> str:
    """Name the outcome QStash sees: ok, retry, non-retryable, bad-signature or error.

    ``bad-signature`` is a 401 given before verification; a verified delivery's 401 (a
    handler's own) is an ``error``.
    """
    if 200 <= status < 300:
        return "ok"
    if status == 401 and verified:
        return "error"
    return _OUTCOMES.get(status, "error")


_OUTCOMES = {401: "bad-signature", 489: "non-retryable", 503: "retry"}
_REFUSAL = "qstash_jobs_refusal"
#: Reasons to refuse a request before verifying it, besides the signature errors' codes.
BODY_REFUSALS = ("payload_too_large", "unreadable_body")


@functools.cache  # the error classes are all declared at import: read on every refusal
def refusal_reasons() -> frozenset[str]:
    """Return every reason :func:`refusal` can give: a fixed set, fit for a metric label."""
    codes = {SignatureError.code, *BODY_REFUSALS}
    pending = [SignatureError]
    while pending:
        for subclass in pending.pop().__subclasses__():
            codes.add(subclass.code)
            pending.append(subclass)
    return frozenset(codes)


def mark_refused(response: Response, reason: str) -> Response:
    """Tag ``response`` as a refusal before verification, for ``reason`` (one of
    :func:`refusal_reasons`; anything else is recorded as ``invalid_signature``)."""
    if reason not in refusal_reasons():
        reason = SignatureError.code
    setattr(response, _REFUSAL, reason)
    return response


def refusal(response: Response) -> str | None:
    """Return why the request was refused before verification, or None if it was not.

    One of :func:`refusal_reasons`, never a value the caller chose.
    """
    reason: str | None = getattr(response, _REFUSAL, None)
    return reason
