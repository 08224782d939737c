"""deliver-webhook through signed deliveries to a local receiver; webhook-failed callbacks."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpcore
import pytest
from flask import Flask
from standardwebhooks import Webhook

from app import outbound
from app.testing import DeliveryClient
from jobs import webhook
from tests.jobs.conftest import make_app
from tests.jobs.recorder import Recorder, Reply, recording_server

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.fixture
def receiver() -> Iterator[Recorder]:
    with recording_server() as recorder:
        yield recorder


@pytest.fixture
def app(job_config: dict[str, Any], tmp_path: Path) -> Iterator[Flask]:
    """The app with 127.0.0.1/32 opened on purpose, short timeouts, a small read cap."""
    config = {
        **job_config,
        "WEBHOOK_ALLOWED_NETWORKS": ["127.0.0.1/32"],
        "WEBHOOK_TIMEOUT": 1.0,
        "WEBHOOK_CONNECT_TIMEOUT": 1.0,
        "WEBHOOK_MAX_RESPONSE_BYTES": 1024,
    }
    flask_app = make_app(config, tmp_path / "instance")
    yield flask_app
    cached = flask_app.extensions.get("qstash_jobs.webhook_client")
    if cached:
        cached[1].close()


def payload(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "webhookId": "wh_123",
        "eventType": "invoice.paid",
        "payload": {"invoiceId": "in_1", "amount": 4200},
        "targetUrl": url,
        "secret": SECRET,
        **overrides,
    }


def test_delivery_verifies_with_standardwebhooks(
    client: DeliveryClient, receiver: Recorder
) -> None:
    """The official standardwebhooks library accepts what we send, and reads our data."""
    response = client.deliver("deliver-webhook", payload(receiver.url + "/hook"), message_id="m1")
    assert response.status_code == 200, response.get_json()
    [request] = receiver.requests
    data = Webhook(SECRET).verify(request.body, request.headers)
    assert data["type"] == "invoice.paid"
    assert data["data"] == {"invoiceId": "in_1", "amount": 4200}
    assert request.headers["webhook-id"] == "m1"


def test_raw_string_secret_verifies(client: DeliveryClient, receiver: Recorder) -> None:
    """A raw-string secret is used as the HMAC key bytes, as standardwebhooks does for bytes."""
    body = payload(receiver.url, secret="not-base64 secret!")
    assert client.deliver("deliver-webhook", body).status_code == 200
    [request] = receiver.requests
    Webhook(b"not-base64 secret!").verify(request.body, request.headers)


def test_tampered_body_fails_verification(client: DeliveryClient, receiver: Recorder) -> None:
    """The signature covers the body: a changed byte no longer verifies."""
    client.deliver("deliver-webhook", payload(receiver.url))
    [request] = receiver.requests
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(request.body.replace(b"4200", b"4201"), request.headers)


def test_webhook_id_is_stable_across_retries(client: DeliveryClient, receiver: Recorder) -> None:
    """Redeliveries of one QStash message carry the same webhook-id."""
    for retried in (0, 1, 2):
        client.deliver(
            "deliver-webhook", payload(receiver.url), message_id="msg_s", retried=retried
        )
    assert {r.headers["webhook-id"] for r in receiver.requests} == {"msg_s"}


def test_success_reports_status_and_latency(client: DeliveryClient, receiver: Recorder) -> None:
    """A 2xx answer is a 200 carrying the target's status and the latency."""
    receiver.reply(Reply(204, b""))
    response = client.deliver("deliver-webhook", payload(receiver.url))
    assert response.status_code == 200
    result = response.get_json()
    assert result["targetStatus"] == 204
    assert result["webhookId"] == "wh_123"
    assert isinstance(result["latencyMs"], int) and result["latencyMs"] >= 0


def test_response_read_is_capped(client: DeliveryClient, receiver: Recorder) -> None:
    """A huge response body is read only up to WEBHOOK_MAX_RESPONSE_BYTES."""
    receiver.reply(Reply(200, b"x" * 5_000_000))
    result = client.deliver("deliver-webhook", payload(receiver.url)).get_json()
    assert (result["responseBytes"], result["responseTruncated"]) == (1024, True)


def test_gone_is_non_retryable(client: DeliveryClient, receiver: Recorder) -> None:
    """410 Gone means the endpoint is gone: 489, straight to the DLQ."""
    receiver.reply(Reply(410, {"error": "gone"}))
    response = client.deliver("deliver-webhook", payload(receiver.url))
    assert response.status_code == 489
    assert response.get_json()["errors"]["targetStatus"] == 410


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_is_passed_on(
    client: DeliveryClient, receiver: Recorder, status: int
) -> None:
    """429/503 with Retry-After in seconds retries at that time."""
    receiver.reply(Reply(status, {}, {"Retry-After": "120"}))
    response = client.deliver("deliver-webhook", payload(receiver.url))
    assert (response.status_code, response.headers["Retry-After"]) == (503, "120")


def test_retry_after_http_date_is_passed_on(client: DeliveryClient, receiver: Recorder) -> None:
    """A Retry-After HTTP date becomes the seconds until it."""
    when = datetime.now(UTC) + timedelta(minutes=10)
    receiver.reply(Reply(503, {}, {"Retry-After": format_datetime(when, usegmt=True)}))
    response = client.deliver("deliver-webhook", payload(receiver.url))
    assert response.status_code == 503
    assert 590 <= int(response.headers["Retry-After"]) <= 601


@pytest.mark.parametrize("status", [500, 502, 404, 400, 401])
def test_other_failures_retry_on_the_jobs_backoff(
    client: DeliveryClient, receiver: Recorder, status: int
) -> None:
    """Other non-2xx answers retry after 2^retried seconds, carrying the target's status."""
    receiver.reply(Reply(status, {"error": "nope"}))
    response = client.deliver("deliver-webhook", payload(receiver.url), retried=3)
    assert (response.status_code, response.headers["Retry-After"]) == (503, "8")
    assert response.get_json()["errors"]["targetStatus"] == status


def test_redirect_is_not_followed(client: DeliveryClient, receiver: Recorder) -> None:
    """A 3xx is a failure to retry; the Location is never requested."""
    receiver.reply(Reply(302, {}, {"Location": receiver.url + "/elsewhere"}))
    response = client.deliver("deliver-webhook", payload(receiver.url + "/hook"))
    assert response.status_code == 503
    assert "redirects are not followed" in response.get_json()["message"]
    assert [r.path for r in receiver.requests] == ["/hook"]


def test_timeout_is_retried(client: DeliveryClient, receiver: Recorder) -> None:
    """A target slower than WEBHOOK_TIMEOUT is given up on and retried."""
    receiver.reply(Reply(200, {}, delay=1.5))
    response = client.deliver("deliver-webhook", payload(receiver.url))
    assert response.status_code == 503
    assert "timed out" in response.get_json()["message"]


def test_dripping_target_hits_the_total_timeout(client: DeliveryClient, receiver: Recorder) -> None:
    """A target sending a byte every 0.2 s never trips a read timeout, but the total one."""
    receiver.reply(Reply(200, b"x" * 20, drip=0.2))
    started = time.monotonic()
    response = client.deliver("deliver-webhook", payload(receiver.url))
    assert response.status_code == 503
    assert "timed out" in response.get_json()["message"]
    assert time.monotonic() - started < 3.0  # the drip alone would take 4 s


def test_connection_refused_is_retried(client: DeliveryClient) -> None:
    """A target that refuses connections is retried."""
    with recording_server() as gone:
        url = gone.url
    response = client.deliver("deliver-webhook", payload(url))
    assert response.status_code == 503
    assert "could not be reached" in response.get_json()["message"]


BLOCKED = [
    "127.0.0.2",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.100.100.200",
    "224.0.0.1",
    "240.0.0.1",
    "0.0.0.0",
    "[::1]",
    "[fe80::1]",
    "[fc00::1]",
    "[fd00:ec2::254]",
    "[fec0::1]",
    "192.0.0.8",
    "[::ffff:7f00:2]",
    "[64:ff9b::7f00:2]",
    "[::ffff:a9fe:a9fe]",
    "[2002:a00:1::]",
    "[64:ff9b::a9fe:a9fe]",
    "[ff02::1]",
]


@pytest.mark.parametrize("host", BLOCKED)
def test_blocked_addresses_are_refused(client: DeliveryClient, host: str) -> None:
    """Every non-public address class is a 489 naming targetUrl, with no connection made."""
    response = client.deliver("deliver-webhook", payload(f"http://{host}:9/hook"))
    assert response.status_code == 489, response.get_json()
    assert "refused" in response.get_json()["errors"]["targetUrl"][0]


@pytest.mark.parametrize("address", ["10.1.2.3", "169.254.169.254", "::1", "::ffff:10.0.0.1"])
def test_hostname_resolving_to_a_blocked_address_is_refused(
    client: DeliveryClient, monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    """The check runs on what the name resolves to, not on the name."""
    monkeypatch.setattr(outbound, "resolve", lambda host, port: [address])
    response = client.deliver("deliver-webhook", payload("https://hooks.customer.example/x"))
    assert response.status_code == 489
    assert address in response.get_json()["message"]


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record where the safe backend would connect, and connect nowhere."""
    made: list[tuple[str, int]] = []

    def connect_tcp(self: Any, host: str, port: int, *args: Any, **kwargs: Any) -> None:
        made.append((host, port))
        raise httpcore.ConnectError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)
    return made


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "::ffff:8.8.8.8", "2002:808:808::1"])
def test_public_ipv4_through_an_ipv6_form_is_reached(
    client: DeliveryClient,
    monkeypatch: pytest.MonkeyPatch,
    connections: list[tuple[str, int]],
    address: str,
) -> None:
    """An IPv6-only host reaches 8.8.8.8 through NAT64: the wrapped IPv4 is what is judged."""
    monkeypatch.setattr(outbound, "resolve", lambda host, port: [address])
    response = client.deliver("deliver-webhook", payload("https://hooks.customer.example/x"))
    assert response.status_code == 503, response.get_json()
    assert connections == [(address, 443)]


def test_any_blocked_address_among_several_refuses(
    client: DeliveryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name with one public and one private address is refused (no rebinding by order)."""
    monkeypatch.setattr(outbound, "resolve", lambda host, port: ["93.184.216.34", "10.0.0.7"])
    response = client.deliver("deliver-webhook", payload("https://mixed.example/x"))
    assert response.status_code == 489


@pytest.mark.parametrize(
    "host", ["localhost", "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.0.0.1."]
)
def test_loopback_spellings_are_refused_without_the_allow_list(
    job_config: dict[str, Any], tmp_path: Path, receiver: Recorder, host: str
) -> None:
    """Without WEBHOOK_ALLOWED_NETWORKS, no spelling of loopback reaches a local receiver."""
    flask_app = make_app(job_config, tmp_path / "instance")
    url = receiver.url.replace("127.0.0.1", host)
    response = DeliveryClient(flask_app).deliver("deliver-webhook", payload(url))
    cached = flask_app.extensions.get("qstash_jobs.webhook_client")
    if cached:
        cached[1].close()
    assert response.status_code == 489, response.get_json()
    assert receiver.requests == []


def test_connects_to_the_checked_address(
    client: DeliveryClient, receiver: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is resolved once and the socket goes to that checked IP, Host kept."""
    lookups: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(outbound, "resolve", resolve)
    port = receiver.url.rsplit(":", 1)[1]
    response = client.deliver("deliver-webhook", payload(f"http://hooks.test:{port}/h"))
    assert response.status_code == 200, response.get_json()
    assert lookups == ["hooks.test"]
    assert receiver.requests[0].headers["host"] == f"hooks.test:{port}"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"targetUrl": "ftp://example.com/x"}, "targetUrl"),
        ({"targetUrl": "not a url"}, "targetUrl"),
        ({"secret": "whsec_!!!notbase64"}, "secret"),
        ({"secret": ""}, "secret"),
        ({"webhookId": ""}, "webhookId"),
    ],
)
def test_invalid_payloads_name_the_field(
    client: DeliveryClient, overrides: dict[str, Any], field: str
) -> None:
    """Bad URLs and secrets are a 489 naming the field."""
    response = client.deliver("deliver-webhook", payload("https://example.com", **overrides))
    assert response.status_code == 489
    assert field in response.get_json()["errors"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.000.000.001/",
        "http://0251.0376.0251.0376/",
        "http://１２７.0.0.1/",
        "http://xn--a.com/",
        "http://example.com:99999/",
        "http://example.com:0/",
    ],
)
def test_urls_httpx_cannot_request_are_refused_with_the_payload(
    client: DeliveryClient, connections: list[tuple[str, int]], url: str
) -> None:
    """A URL the schema's pattern passes but httpx refuses is a 489 naming targetUrl, not a 500."""
    response = client.deliver("deliver-webhook", payload(url))
    assert response.status_code == 489, response.get_json()
    assert response.headers["Upstash-NonRetryable-Error"] == "true"
    assert "targetUrl" in response.get_json()["errors"]
    assert connections == []


HOSTILE_RETRY_AFTER = [
    "²",
    "١٢",
    "１２",
    "9" * 400,
    "nan",
    "inf",
    "-5",
    "1e3",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Mon, 01 Jan 99999999999999999999 00:00:00 GMT",
    "Mon, 01 Jan 2020 00:00:00 +9999",
]


@pytest.mark.parametrize("value", HOSTILE_RETRY_AFTER)
def test_hostile_retry_after_falls_back_to_the_jobs_backoff(
    client: DeliveryClient, receiver: Recorder, value: str
) -> None:
    """A subscriber's Retry-After that is no wait of 0 s to a day is ignored, never a crash."""
    receiver.reply(Reply(503, {}, {"Retry-After": value}))
    response = client.deliver("deliver-webhook", payload(receiver.url), retried=3)
    assert (response.status_code, response.headers["Retry-After"]) == (503, "8")


def test_rate_limit_reset_is_passed_on(client: DeliveryClient, receiver: Recorder) -> None:
    """429 with X-RateLimit-Reset (seconds from now) retries then, as QStash would read it."""
    receiver.reply(Reply(429, {}, {"X-RateLimit-Reset": "42"}))
    response = client.deliver("deliver-webhook", payload(receiver.url))
    assert (response.status_code, response.headers["Retry-After"]) == (503, "42")


def test_retry_after_is_read_only_from_429_and_503(
    client: DeliveryClient, receiver: Recorder
) -> None:
    """A 500 with Retry-After retries on the job's backoff: only 429/503 steer the time."""
    receiver.reply(Reply(500, {}, {"Retry-After": "120"}))
    response = client.deliver("deliver-webhook", payload(receiver.url), retried=2)
    assert (response.status_code, response.headers["Retry-After"]) == (503, "4")


@pytest.mark.parametrize("retried", [17, 1100, 10**6, 2**64])
def test_backoff_is_clamped_to_a_day(
    client: DeliveryClient, receiver: Recorder, retried: int
) -> None:
    """Upstash-Retried is unsigned: 2^retried stops at QStash's one-day limit, never overflows."""
    receiver.reply(Reply(500, {}))
    response = client.deliver("deliver-webhook", payload(receiver.url), retried=retried)
    assert (response.status_code, response.headers["Retry-After"]) == (503, "86400")


def test_answer_is_asked_uncompressed(client: DeliveryClient, receiver: Recorder) -> None:
    """The request says Accept-Encoding: identity: the read cap counts bytes as they are."""
    client.deliver("deliver-webhook", payload(receiver.url))
    assert receiver.requests[0].headers["accept-encoding"] == "identity"


def test_job_defaults() -> None:
    """deliver-webhook retries 5 times on 2^retried s and fails over to webhook-failed."""
    job = webhook.deliver_webhook
    assert (job.retries, job.retry_delay, job.failure_callback) == (
        5,
        "pow(2, retried) * 1000",
        "webhook-failed",
    )


# --- webhook-failed -------------------------------------------------------------------


def b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(raw).decode()


def failure_callback_body() -> dict[str, Any]:
    """Return a failure-callback body shaped like QStash's (QSTASH_PROTOCOL.md §4)."""
    our_answer = {
        "code": "retry_later",
        "status": 503,
        "message": "https://hooks.example/x answered 500",
        "errors": {"targetUrl": "https://hooks.example/x", "targetStatus": 500},
    }
    return {
        "status": 503,
        "header": {"Content-Type": ["application/json"], "Retry-After": ["32"]},
        "body": b64(our_answer),
        "retried": 5,
        "maxRetries": 5,
        "dlqId": "1725323658779-0",
        "sourceMessageId": "msg_26hZCxZCuWyyTWPmSVBrNC1RADwpgWxPcak2rQD51EMjFMuzcW7qYXpPiDyw",
        "topicName": "",
        "endpointName": "",
        "url": "https://jobs.example.com/api/jobs/deliver-webhook",
        "method": "POST",
        "sourceHeader": {"Upstash-Retries": ["5"], "Content-Type": ["application/json"]},
        "sourceBody": b64(payload("https://hooks.example/x")),
        "notBefore": 0,
        "createdAt": 1725323655012,
        "scheduleId": "",
        "callerIP": "203.0.113.9",
    }


@pytest.fixture
def hooked() -> Iterator[list[webhook.WebhookFailure]]:
    received: list[webhook.WebhookFailure] = []
    hook = webhook.on_webhook_failure(received.append)
    yield received
    webhook.failure_hooks.remove(hook)


def test_failure_callback_is_decoded_and_handed_to_hooks(
    client: DeliveryClient, hooked: list[webhook.WebhookFailure]
) -> None:
    """A real-shaped failure callback reaches the hook as a typed WebhookFailure."""
    response = client.deliver("webhook-failed", failure_callback_body())
    assert response.status_code == 200, response.get_json()
    [failure] = hooked
    assert (failure.webhook_id, failure.target_url, failure.event_type) == (
        "wh_123",
        "https://hooks.example/x",
        "invoice.paid",
    )
    assert (failure.last_status, failure.dlq_id, failure.retried) == (500, "1725323658779-0", 5)
    assert failure.callback.header["Retry-After"] == ["32"]
    assert failure.callback.is_failure


def test_failure_is_logged_on_one_line_without_the_secret(
    client: DeliveryClient, caplog: pytest.LogCaptureFixture
) -> None:
    """One structured line names webhook id, target, last status and dlq id; no secret."""
    with caplog.at_level(logging.WARNING, logger="jobs.webhook"):
        client.deliver("webhook-failed", failure_callback_body())
    [record] = [r for r in caplog.records if r.name == "jobs.webhook"]
    line = record.getMessage()
    for part in ("webhook_id=wh_123", "target=https://hooks.example/x", "last_status=500"):
        assert part in line
    assert "dlq_id=1725323658779-0" in line
    assert SECRET not in line and "\n" not in line


def test_malformed_callback_is_non_retryable(client: DeliveryClient) -> None:
    """A callback whose base64 does not decode is a 489 naming the field."""
    body = {**failure_callback_body(), "sourceBody": "%%% not base64"}
    response = client.deliver("webhook-failed", body)
    assert response.status_code == 489
    assert "sourceBody" in response.get_json()["errors"]
