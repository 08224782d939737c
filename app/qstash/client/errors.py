"""The publishing client's exceptions, mapped at the boundary from httpx and HTTP answers.

```
QStashJobsError
└── QStashError                 a call to QStash's REST API did not succeed
    ├── QStashConnectionError   no answer: connection refused, timeout, dropped response
    └── QStashAPIError          QStash answered with a 4xx/5xx (status, message, response)
        └── RateLimitError      429: too many requests (retry_after in seconds, if known)
```

No httpx exception escapes the client: each is re-raised as one of these ``from`` it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.qstash.errors import QStashJobsError

if TYPE_CHECKING:
    import httpx


class QStashError(QStashJobsError):
    """A call to QStash's REST API did not succeed."""


class QStashConnectionError(QStashError):
    """QStash could not be reached, or no answer arrived (after the client's retries)."""


class QStashAPIError(QStashError):
    """QStash answered with an error status; ``message`` is its ``error`` text."""

    def __init__(self, status: int, message: str, *, response: httpx.Response | None = None):
        super().__init__(f"QStash answered {status}: {message}")
        self.status = status
        self.message = message
        self.response = response


class RateLimitError(QStashAPIError):
    """QStash refused the call for now (429); ``retry_after`` says when to try again."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(429, message, response=response)
        self.retry_after = retry_after
