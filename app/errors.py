"""The framework's exceptions, in one tree.

```
QStashJobsError
├── ConfigurationError          the app cannot start as configured
│   └── JobDefinitionError      a @job/@cron declaration is invalid (raised at import)
├── JobError                    raised by a handler to steer QStash
│   ├── NonRetryableError       489 + Upstash-NonRetryable-Error: straight to the DLQ
│   └── RetryLater              503 + Retry-After: retry at a chosen time
├── SignatureError              an Upstash-Signature was missing or did not verify
│   ├── MissingSignature … BodyHashMismatch     (one class per reason; app.qstash.errors)
└── InvalidCron                 a cron expression QStash would refuse (also a ValueError)
```

The root and the signature errors are the protocol layer's (``app.qstash.errors``) and are
re-exported here, so ``from app.errors import ...`` reaches the whole tree. Any other
exception escaping a handler is a bug or an outage: it answers 500 and QStash retries with
backoff. Errors of the publishing client live in ``app.qstash.client``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from numbers import Real
from typing import Any, cast

from app.qstash.errors import (
    AlgorithmNotAllowed,
    BodyHashMismatch,
    InvalidCron,
    InvalidSignature,
    MalformedSignature,
    MissingClaim,
    MissingSignature,
    QStashJobsError,
    SignatureError,
    SignatureExpired,
    SignatureNotYetValid,
    SubjectMismatch,
    WrongIssuer,
)
from app.qstash.timing import MAX_RETRY_DELAY

__all__ = [
    "AlgorithmNotAllowed",
    "BodyHashMismatch",
    "ConfigurationError",
    "InvalidCron",
    "InvalidSignature",
    "JobDefinitionError",
    "JobError",
    "MalformedSignature",
    "MissingClaim",
    "MissingSignature",
    "NonRetryableError",
    "QStashJobsError",
    "RetryLater",
    "SignatureError",
    "SignatureExpired",
    "SignatureNotYetValid",
    "SubjectMismatch",
    "WrongIssuer",
    "clamp_retry_after",
]


class ConfigurationError(QStashJobsError):
    """The application's configuration cannot be used safely."""


class JobDefinitionError(ConfigurationError):
    """A job or cron declaration is invalid."""


class JobError(QStashJobsError):
    """Raised by a handler to tell QStash how to treat this delivery."""

    #: Machine-readable error code used in the JSON error body.
    code = "job_error"

    def __init__(self, message: str, *, errors: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors
        if code is not None:
            self.code = code


class NonRetryableError(JobError):
    """The message can never succeed: answer 489 so QStash sends it to the DLQ now."""

    code = "non_retryable"


class RetryLater(JobError):
    """The message should be retried at a specific time, not on QStash's backoff.

    ``after`` is a number of seconds (any real number: int, float, ``Decimal``,
    ``Fraction``), a ``timedelta`` or a ``datetime`` (naive = local). Whatever its value,
    ``Retry-After`` stays within QStash's range: 1 second to 1 day.
    """

    code = "retry_later"

    def __init__(
        self,
        message: str = "retry later",
        *,
        after: float | Decimal | timedelta | datetime,
        errors: Any = None,
    ) -> None:
        super().__init__(message, errors=errors)
        if not isinstance(after, Real | Decimal | timedelta | datetime):
            raise TypeError(
                f"RetryLater: after must be seconds, a timedelta or a datetime, not {after!r}"
            )
        self.after = after

    @property
    def retry_after_seconds(self) -> int:
        """Whole seconds until the retry, from 1 to 86400 (QStash's longest retry delay)."""
        return clamp_retry_after(_seconds_until(self.after))


#: QStash's bounds on a retry delay, in seconds: a whole second, and one day.
MIN_RETRY_AFTER = 1
MAX_RETRY_AFTER = int(MAX_RETRY_DELAY)


def clamp_retry_after(seconds: float | Decimal | Real) -> int:
    """Round ``seconds`` up to whole seconds within [1, 86400]; NaN counts as the maximum."""
    try:
        value = float(seconds)
    except OverflowError:  # an int or Fraction past float's range
        value = math.inf if cast(float, seconds) > 0 else -math.inf
    except ValueError:  # Decimal("sNaN")
        value = math.nan
    if math.isnan(value):
        # No delay was computed: waiting longest is the safe guess for an upstream that
        # asked to wait.
        return MAX_RETRY_AFTER
    return math.ceil(min(max(value, MIN_RETRY_AFTER), MAX_RETRY_AFTER))


def _seconds_until(after: Real | Decimal | timedelta | datetime) -> Real | Decimal | float:
    if isinstance(after, timedelta):
        return after.total_seconds()
    if not isinstance(after, datetime):
        return after
    if after.tzinfo is None:
        try:
            # A naive datetime is local time, as everywhere in Python.
            after = after.astimezone(UTC)
        except (OverflowError, ValueError, OSError):
            # Only at the ends of time (datetime.min/max), which local time cannot reach.
            return math.inf if after > datetime.now() else -math.inf
    return (after - datetime.now(UTC)).total_seconds()
