"""Test helpers for app developers: signed deliveries through Flask's test client.

```python
from app.testing import DeliveryClient

def test_welcome_email(app):
    client = DeliveryClient(app)
    response = client.deliver("send-email", {"to": "a@example.com", "template": "welcome"})
    assert response.status_code == 200
```

Deliveries are signed exactly as QStash signs them (``app.qstash.signature.sign``) with
the app's current signing key, for APP_URL + the job's path, and carry QStash's headers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask.testing import FlaskClient

from app.jobs import URL_PREFIX
from app.qstash.signature import sign

if TYPE_CHECKING:
    from flask import Flask
    from werkzeug.test import TestResponse


def encode_payload(payload: Any) -> bytes:
    """Serialise ``payload`` the way publishers do: compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def delivery_headers(
    app: Flask,
    path: str,
    body: bytes,
    *,
    message_id: str | None = None,
    retried: int = 0,
    schedule_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    key: str | None = None,
    signed: bool = True,
) -> dict[str, str]:
    """Return the headers QStash would send when delivering ``body`` to ``path``."""
    url = app.config["APP_URL"].rstrip("/") + path
    result = {
        "Content-Type": "application/json",
        "User-Agent": "Upstash-QStash",
        "Upstash-Message-Id": message_id or f"msg_{uuid.uuid4().hex}",
        "Upstash-Retried": str(retried),
    }
    if signed:
        signing_key = key or app.config["QSTASH_CURRENT_SIGNING_KEY"]
        result["Upstash-Signature"] = sign(body, url=url, key=signing_key)
    if schedule_id is not None:
        result["Upstash-Schedule-Id"] = schedule_id
    result.update(headers or {})
    return result


class DeliveryClient(FlaskClient):
    """A Flask test client that can also make signed QStash deliveries."""

    def __init__(self, app: Flask, *args: Any, **kwargs: Any) -> None:
        super().__init__(app, *args, use_cookies=False, **kwargs)

    def deliver(
        self,
        job: str,
        payload: Any = None,
        *,
        body: bytes | None = None,
        message_id: str | None = None,
        retried: int = 0,
        schedule_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> TestResponse:
        """POST a signed delivery of ``payload`` (or raw ``body``) to the job ``job``."""
        raw = encode_payload(payload) if body is None else body
        path = f"{URL_PREFIX}/{job}"
        sent = delivery_headers(
            self.application,
            path,
            raw,
            message_id=message_id,
            retried=retried,
            schedule_id=schedule_id,
            headers=headers,
            key=key,
        )
        return self.post(path, data=raw, headers=sent)
