"""The framework's exceptions, in one tree.

```
QStashJobsError
├── ConfigurationError          the app cannot start as configured
│   └── JobDefinitionError      a @job/@cron declaration is invalid (raised at import)
├── JobError                    raised by a handler to steer QStash
│   ├── NonRetryableError       489 + Upstash-NonRetryable-Error: straight to the DLQ
│   └── RetryLater              503 + Retry-After: retry at a chosen time
└── SignatureError              an Upstash-Signature was missing or did not verify
    ├── MissingSignature
    ├── MalformedSignature
    │   └── MissingClaim
    ├── AlgorithmNotAllowed
    ├── InvalidSignature        signed with neither the current nor the next key
    ├── SignatureExpired
    ├── SignatureNotYetValid
    ├── WrongIssuer
    ├── SubjectMismatch
    └── BodyHashMismatch
```

Any other exception escaping a handler is a bug or an outage: it answers 500 and QStash
retries with backoff. Errors of the publishing client live in ``app.qstash.client``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any


class QStashJobsError(Exception):
    """Base class of every exception this framework raises on purpose."""


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

    ``after`` is a number of seconds, a ``timedelta`` or a ``datetime`` (naive = local).
    """

    code = "retry_later"

    def __init__(
        self,
        message: str = "retry later",
        *,
        after: float | timedelta | datetime,
        errors: Any = None,
    ) -> None:
        super().__init__(message, errors=errors)
        self.after = after

    @property
    def retry_after_seconds(self) -> int:
        """Whole seconds until the retry (at least 1), as ``Retry-After`` carries them."""
        after = self.after
        if isinstance(after, datetime):
            # A naive datetime is local time, as everywhere in Python.
            seconds = (after.astimezone(UTC) - datetime.now(UTC)).total_seconds()
        elif isinstance(after, timedelta):
            seconds = after.total_seconds()
        else:
            seconds = float(after)
        return max(1, math.ceil(seconds))


class SignatureError(QStashJobsError):
    """The request's ``Upstash-Signature`` is missing or does not verify."""

    code = "invalid_signature"


class MissingSignature(SignatureError):
    """The request carries no ``Upstash-Signature`` header."""

    code = "missing_signature"


class MalformedSignature(SignatureError):
    """The token is not a well-formed JWT with QStash's claims."""

    code = "malformed_signature"


class MissingClaim(MalformedSignature):
    """A claim QStash always sends is absent."""

    code = "missing_claim"


class AlgorithmNotAllowed(SignatureError):
    """The token uses an algorithm other than HS256 (``none``, RS256, HS512…)."""

    code = "algorithm_not_allowed"


class InvalidSignature(SignatureError):
    """The token's signature matches neither the current nor the next signing key."""

    code = "signature_mismatch"


class SignatureExpired(SignatureError):
    """The token's ``exp`` is in the past, beyond the clock tolerance."""

    code = "signature_expired"


class SignatureNotYetValid(SignatureError):
    """The token's ``nbf`` or ``iat`` is in the future, beyond the clock tolerance."""

    code = "signature_not_yet_valid"


class WrongIssuer(SignatureError):
    """The token's ``iss`` is not ``Upstash``."""

    code = "wrong_issuer"


class SubjectMismatch(SignatureError):
    """The token was issued for another URL than the one receiving it."""

    code = "subject_mismatch"

    def __init__(self, *, expected: str, actual: object) -> None:
        super().__init__(
            f"token was issued for {actual!r} but this endpoint is {expected!r}"
            " (check APP_URL: it must be the public URL QStash calls)"
        )
        self.expected = expected
        self.actual = actual


class BodyHashMismatch(SignatureError):
    """The SHA-256 of the raw body differs from the token's ``body`` claim."""

    code = "body_hash_mismatch"
