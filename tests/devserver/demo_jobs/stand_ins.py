"""Minimal jobs with the real jobs' names and payload shapes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from app.jobs import job
from app.qstash.receiver import Delivery


@job("send-email")
def send_email(payload: Any, delivery: Delivery) -> dict[str, str]:
    """Pretend to send the templated email."""
    return {"to": payload["to"], "template": payload["template"]}


@job("process-image")
def process_image(payload: Any, delivery: Delivery) -> dict[str, Any]:
    """Open the stored image and report its size."""
    with Image.open(Path(os.environ["STORAGE_ROOT"]) / payload["fileKey"]) as image:
        return {"size": list(image.size), "operations": payload["operations"]}


@job("deliver-webhook")
def deliver_webhook(payload: Any, delivery: Delivery) -> dict[str, int]:
    """POST the event to the target URL."""
    response = httpx.post(payload["targetUrl"], json=payload["payload"], timeout=5)
    return {"status": response.status_code}
