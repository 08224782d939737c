"""The QStash protocol, with no web framework and nothing of this app: usable on its own.

| module          | what lives there                                                   |
|-----------------|--------------------------------------------------------------------|
| ``signature``   | ``verify``/``sign`` of ``Upstash-Signature`` (HS256 JWT, body hash)   |
| ``protocol``    | 489 + ``Upstash-NonRetryable-Error``, ``Upstash-Retried``, public URLs |
| ``errors``      | the root ``QStashJobsError`` and the ``SignatureError`` tree          |
| ``client``      | the REST client: publish, batch, schedules, queues, DLQ, keys         |
| ``callbacks``   | the body QStash posts to a callback URL, typed                        |
| ``cron``        | cron expressions as QStash accepts them (``CRON_TZ=`` prefix)         |
| ``timing``      | durations (``"1h30m"``), ``Retry-After`` and QStash's time limits      |
| ``retry_delay`` | retry-delay expressions (``pow(2, retried) * 1000``), evaluated       |
| ``redact``      | secrets taken out of URLs before they are logged or stored            |

The rule (an import-linter contract in pyproject.toml): nothing here imports ``app.*``
outside ``app.qstash``, nor Flask or werkzeug.
"""
