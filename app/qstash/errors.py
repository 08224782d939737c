"""The protocol layer's exceptions: a delivery's signature, and the root of the whole tree.

```
QStashJobsError                 every exception this package raises on purpose
├── SignatureError              an Upstash-Signature was missing or did not verify
│   ├── MissingSignature
│   ├── MalformedSignature
│   │   └── MissingClaim
│   ├── AlgorithmNotAllowed
│   ├── InvalidSignature        signed with neither the current nor the next key
│   ├── SignatureExpired
│   ├── SignatureNotYetValid
│   ├── WrongIssuer
│   ├── SubjectMismatch
│   └── BodyHashMismatch
├── InvalidCron                 not a cron expression QStash accepts (also a ValueError)
└── QStashError                 the REST client's errors (``app.qstash.client.errors``)
```

The framework's own errors (configuration, ``NonRetryableError``, ``RetryLater``) live in
``app.errors``, which re-exports these.
"""

from __future__ import annotations


class QStashJobsError(Exception):
    """Base class of every exception this framework raises on purpose."""


class InvalidCron(QStashJobsError, ValueError):
    """A cron expression QStash would refuse: wrong field count, bad value, unknown zone."""


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
