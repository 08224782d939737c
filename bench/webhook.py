"""deliver-webhook throughput against a bare pooled httpx loop, same local receiver.

* ``httpx``: a plain ``httpx.Client`` POSTing a body of the same size in a loop.
* ``handler``: the deliver-webhook handler called directly (Standard Webhooks signing,
  SSRF-checked pooled client, capped read): what the job module itself adds.
* ``endpoint``: signed deliveries to ``/api/jobs/deliver-webhook`` through the WSGI app
  in-process (routing, signature verification, schema, handler, response), each request's
  environ built before the clock starts, as gunicorn would hand it over. QStash's
  signatures are made before the clock starts too: signing is QStash's work, not ours.

The receiver runs in its own process and answers at once, or after ``--receiver-ms``
(a receiver that does some work, as real ones do).

Run: ``.venv/bin/python bench/webhook.py [--requests N]``
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path

import httpx
from werkzeug.test import EnvironBuilder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import create_app  # noqa: E402
from app.jobs import URL_PREFIX  # noqa: E402
from app.qstash.receiver import Delivery  # noqa: E402
from app.testing import delivery_headers, encode_payload  # noqa: E402
from bench._receiver import receiver  # noqa: E402
from jobs.webhook import DeliverWebhookSchema, deliver_webhook  # noqa: E402

CONFIG = {
    "TESTING": True,
    "QSTASH_CURRENT_SIGNING_KEY": "sig_bench_current_0123456789abcdef",
    "QSTASH_NEXT_SIGNING_KEY": "sig_bench_next_0123456789abcdefghi",
    "APP_URL": "https://bench.example.com",
    "WEBHOOK_ALLOWED_NETWORKS": ["127.0.0.1/32"],
}
SECRET = "whsec_" + base64.b64encode(b"bench-secret-0123456789abcdef012").decode()


def _payload(url: str, i: int) -> dict[str, object]:
    return {
        "webhookId": f"wh_{i}",
        "eventType": "invoice.paid",
        "payload": {"invoiceId": f"in_{i}", "amount": 4200},
        "targetUrl": url + "/hook",
        "secret": SECRET,
    }


def endpoint_rate(url: str, requests: int) -> float:
    """Return deliveries per second through the deliver-webhook endpoint (WSGI, in-process)."""
    app = create_app(CONFIG)
    path = f"{URL_PREFIX}/deliver-webhook"
    environs = []
    for i in range(requests + 1):
        body = encode_payload(_payload(url, i))
        headers = delivery_headers(app, path, body, message_id=f"msg_{i}")
        builder = EnvironBuilder(path=path, method="POST", data=body, headers=headers)
        environs.append(builder.get_environ())  # what gunicorn hands the app
    statuses: list[str] = []

    def start_response(status: str, headers: object, exc_info: object = None) -> None:
        statuses.append(status)

    b"".join(app(environs.pop(), start_response))  # warm the pool
    started = time.perf_counter()
    for environ in environs:
        b"".join(app(environ, start_response))
    elapsed = time.perf_counter() - started
    assert all(status.startswith("200") for status in statuses), set(statuses)
    return requests / elapsed


def handler_rate(url: str, requests: int) -> float:
    """Return deliveries per second of the handler called directly."""
    app = create_app(CONFIG)
    schema = DeliverWebhookSchema()
    payloads = [schema.load(_payload(url, i)) for i in range(requests)]
    deliveries = [
        Delivery(
            message_id=f"msg_{i}",
            retried=0,
            schedule_id=None,
            caller_ip=None,
            topic_name=None,
            region=None,
            body=b"",
            url=url,
            job="deliver-webhook",
        )
        for i in range(requests)
    ]
    with app.app_context():
        deliver_webhook(payloads[0], deliveries[0])  # warm the pool
        started = time.perf_counter()
        for payload, delivery in zip(payloads, deliveries, strict=True):
            deliver_webhook(payload, delivery)
        return requests / (time.perf_counter() - started)


def httpx_rate(url: str, requests: int) -> float:
    """Return POSTs per second of a bare pooled httpx client."""
    body = (
        b'{"type":"invoice.paid","timestamp":"2026-11-29T08:00:00Z",'
        b'"data":{"invoiceId":"in_1","amount":4200}}'
    )
    with httpx.Client() as client:
        client.post(url + "/hook", content=body)
        started = time.perf_counter()
        for _ in range(requests):
            response = client.post(
                url + "/hook", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 200
        return requests / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--receiver-ms", type=float, default=0.0)
    args = parser.parse_args()
    sides = {"httpx": httpx_rate, "handler": handler_rate, "endpoint": endpoint_rate}
    rates: dict[str, list[float]] = {name: [] for name in sides}
    with receiver(delay=args.receiver_ms / 1000) as url:
        for _ in range(args.passes):  # alternate: the machine's load drifts
            for name, side in sides.items():
                rates[name].append(side(url, args.requests))
    best = {name: max(values) for name, values in rates.items()}
    print(
        f"{args.passes} passes x {args.requests} requests, receiver answers after"
        f" {args.receiver_ms:g} ms; best pass of each side"
    )
    for name, rate in best.items():
        print(f"{name:<10}{rate:8.0f} /s{rate / best['httpx']:8.2f}x of bare httpx")


if __name__ == "__main__":
    main()
