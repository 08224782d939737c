"""The QStash REST client: publish, batch, messages, schedules, queues, DLQ, signing keys.

```python
from app.qstash.client import QStash, FlowControl

qstash = QStash(token, base_url="http://127.0.0.1:8080")
qstash.publish_json("https://jobs.example.com/api/jobs/send-email", {"to": "a@b.c"},
                    delay="10m", retries=5, retry_delay="pow(2, retried) * 1000")
```

| module          | what lives there                                              |
|-----------------|---------------------------------------------------------------|
| ``api``         | ``QStash``: publishing, batches and messages                  |
| ``management``  | schedules, queues, DLQ and signing keys (``QStash``'s base)   |
| ``events``      | logs: each message's state changes (``QStash.logs``)          |
| ``groups``      | URL groups: endpoints a publish fans out to                   |
| ``flow``        | flow-control keys: inspect, pause, pin, reset the rate        |
| ``base``        | the shared transport, JSON calls and ids in paths             |
| ``options``     | ``PublishOptions``, ``FlowControl``, ``Redact``, ``Message``  |
| ``expressions`` | durations (``"1d10h30m"``) and retry-delay expressions        |
| ``transport``   | pooled httpx client, retries with backoff, error mapping      |
| ``models``      | typed answers (``PublishResult``, ``Schedule``, ``Queue``…)   |
| ``errors``      | ``QStashError`` tree                                          |

It knows nothing of Flask or of this framework's jobs: the app-aware side (``Job.enqueue``,
one client per app, schedules and queues as code) is ``app.publishing``.
"""

from __future__ import annotations

from app.qstash.client.api import DEFAULT_BASE_URL, QStash, encode_json, json_message
from app.qstash.client.errors import (
    QStashAPIError,
    QStashConnectionError,
    QStashError,
    RateLimitError,
)
from app.qstash.client.events import LogEvent, LogPage
from app.qstash.client.flow import FlowControlInfo, GlobalParallelism
from app.qstash.client.groups import Endpoint, UrlGroup
from app.qstash.client.models import (
    DlqMessage,
    DlqPage,
    PublishResult,
    Queue,
    Schedule,
    SigningKeys,
)
from app.qstash.client.options import FlowControl, Message, PublishOptions, Redact

__all__ = [
    "DEFAULT_BASE_URL",
    "DlqMessage",
    "DlqPage",
    "Endpoint",
    "FlowControl",
    "FlowControlInfo",
    "GlobalParallelism",
    "LogEvent",
    "LogPage",
    "Message",
    "PublishOptions",
    "PublishResult",
    "QStash",
    "QStashAPIError",
    "QStashConnectionError",
    "QStashError",
    "Queue",
    "RateLimitError",
    "Redact",
    "Schedule",
    "SigningKeys",
    "UrlGroup",
    "encode_json",
    "json_message",
]
