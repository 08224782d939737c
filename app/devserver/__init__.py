"""A local QStash-compatible server: the v2 REST API, signed deliveries, retries, DLQ,
queues, flow control and cron schedules, with its state in SQLite.

| module          | what lives there                                               |
|-----------------|----------------------------------------------------------------|
| ``server``      | ``DevServer``: everything below wired together, serving HTTP   |
| ``api``         | the v2 REST API (WSGI): routing, auth, publishing, messages    |
| ``api_resources``| the API's schedules, queues, DLQ and keys views               |
| ``publish``     | publish headers → validated message spec                       |
| ``redaction``   | ``Upstash-Redact-Fields``: ``REDACTED:<sha256>`` in views      |
| ``filters``     | what a bulk call names: ids, filters, ``count``, ``cursor``    |
| ``delivery``    | the dispatcher: due messages → signed HTTP calls → outcomes    |
| ``transport``   | the HTTP/1.1 client those calls go through (sockets, ``ssl``)  |
| ``gates``       | global, per-destination, queue and flow-control limits         |
| ``flow``        | the flow-control API: inspect, pause, pin, reset a key's gates |
| ``events``      | the events (logs) API: each message's state changes, bounded  |
| ``groups``      | URL groups and the fan-out of publishes and batches to them   |
| ``callbacks``   | callback and failure-callback bodies and messages              |
| ``scheduler``   | cron schedules firing messages                                 |
| ``store``       | SQLite (WAL) state                                             |
| ``records``     | the records the store keeps (message, attempt, DLQ entry, …)   |
| ``delivered_log``| successful attempts committed in batches                      |
| ``timing``      | durations, Retry-After, default backoff                        |
| ``retry_delay`` | ``Upstash-Retry-Delay`` expressions over an AST whitelist      |
| ``cli``         | ``flask qstash dev`` and ``flask dev``                         |
"""

from __future__ import annotations

from app.devserver.server import DevServer

__all__ = ["DevServer"]
