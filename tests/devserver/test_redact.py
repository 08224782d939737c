"""Redaction (``Upstash-Redact-Fields``): what the API shows is ``REDACTED:<sha256>``, what
the endpoint gets is the original; messages, events, DLQ, schedules and callbacks, through
the API, our client (``Redact``) and both official SDKs."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from qstash import QStash as OfficialQStash
from werkzeug.wrappers import Response

from app.devserver import DevServer, redaction
from app.qstash.client import QStash, Redact
from tests.devserver.endpoint import Endpoint
from tests.devserver.js_oracle import run_oracle

HOLD = "1d"
SECRET_BODY = b'{"card":"4111-secret"}'
TOKEN = "Bearer tok-secret"


def redacted(value: bytes | str) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return "REDACTED:" + hashlib.sha256(raw).hexdigest()


def publish(api: httpx.Client, url: str, headers: dict[str, str]) -> str:
    answer = api.post(f"/v2/publish/{url}", content=SECRET_BODY, headers=headers)
    assert answer.status_code == 201, answer.text
    message_id: str = answer.json()["messageId"]
    return message_id


def secret_headers(fields: str, **more: str) -> dict[str, str]:
    return {
        "Upstash-Forward-Authorization": TOKEN,
        "Upstash-Forward-X-Public": "visible",
        "Content-Type": "application/json",
        "Upstash-Redact-Fields": fields,
        **more,
    }


def events_of(api: httpx.Client, message_id: str, last: str) -> list[dict[str, Any]]:
    """Wait until the newest event of ``message_id`` is ``last``; return its events."""
    deadline = time.monotonic() + 5
    while True:
        listed = api.get("/v2/events", params={"messageId": message_id}).json()["events"]
        if listed and listed[0]["state"] == last:
            return list(listed)
        assert time.monotonic() < deadline, listed
        time.sleep(0.02)


def shows_no_secret(answer: httpx.Response) -> None:
    assert b"4111-secret" not in answer.content and b"tok-secret" not in answer.content


# -- parsing the header -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "spec"),
    [
        ("body", {"body": True}),
        ("body, header[Authorization]", {"body": True, "headers": ["Authorization"]}),
        ("header", {"headers": True}),
        ("headers", {"headers": True}),  # the docs' table spells it so
        ("header[A],headers[B],header[A],header", {"headers": True}),
        ("header[A],headers[B],header[A]", {"headers": ["A", "B"]}),
        ("BODY,", {"body": True}),
        ("", None),
        (None, None),
    ],
)
def test_the_header_parses_as_both_sdks_and_the_docs_write_it(
    raw: str | None, spec: dict[str, Any] | None
) -> None:
    assert redaction.parse(raw) == spec


@pytest.mark.parametrize("raw", ["bodyy", "header[]", "header[Bad Name]", "all", "body,cookies"])
def test_an_unknown_field_is_a_400_naming_it(api: httpx.Client, raw: str) -> None:
    """Never a silent "nothing redacted": the publisher meant to hide something."""
    answer = api.post("/v2/publish/http://127.0.0.1:9/x", headers={"Upstash-Redact-Fields": raw})
    assert answer.status_code == 400
    assert "Upstash-Redact-Fields" in answer.json()["error"]


# -- where it shows, and where it does not -------------------------------------------------------


def test_a_pending_message_shows_digests(api: httpx.Client, endpoint: Endpoint) -> None:
    """GET /v2/messages/{id}: body and the named header redacted, the others as sent."""
    fields = secret_headers("body, header[authorization]", **{"Upstash-Delay": HOLD})
    message_id = publish(api, endpoint.url("/r/later"), fields)
    answer = api.get(f"/v2/messages/{message_id}")
    shows_no_secret(answer)
    shown = answer.json()
    assert shown["body"] == redacted(SECRET_BODY)
    assert shown["header"]["Authorization"] == [redacted(TOKEN)]
    assert shown["header"]["X-Public"] == ["visible"]
    assert shown["header"]["Content-Type"] == ["application/json"]


def test_the_endpoint_gets_the_originals_and_the_events_only_digests(
    api: httpx.Client, endpoint: Endpoint
) -> None:
    """Every event of the message (CREATED's body included) hides them; delivery does not."""
    message_id = publish(api, endpoint.url("/r/ok"), secret_headers("body,header"))
    [got] = endpoint.wait_for("/r/ok", 1)
    assert got.body == SECRET_BODY and got.headers["Authorization"] == TOKEN
    listed = events_of(api, message_id, "DELIVERED")
    shows_no_secret(api.get("/v2/events", params={"messageId": message_id}))
    assert [event["state"] for event in listed] == ["DELIVERED", "ACTIVE", "CREATED"]
    for event in listed:
        assert base64.b64decode(event["body"]).decode() == redacted(SECRET_BODY)
        assert event["header"] == {
            "Authorization": [redacted(TOKEN)],
            "X-Public": [redacted("visible")],
            "Content-Type": [redacted("application/json")],
        }


def test_the_dlq_shows_digests_and_its_retry_delivers_originals(
    api: httpx.Client, endpoint: Endpoint
) -> None:
    """DLQ list and get redact; a retry delivers the original body and headers again."""
    endpoint.replies["/r/fail"] = lambda request: Response("no", 500)
    fields = secret_headers("body, header[Authorization]", **{"Upstash-Retries": "0"})
    publish(api, endpoint.url("/r/fail"), fields)
    endpoint.wait_for("/r/fail", 1)
    deadline = time.monotonic() + 5
    while not (listed := api.get("/v2/dlq")).json()["messages"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    shows_no_secret(listed)
    [entry] = listed.json()["messages"]
    assert entry["body"] == redacted(SECRET_BODY)
    assert entry["header"]["Authorization"] == [redacted(TOKEN)]
    one = api.get(f"/v2/dlq/{entry['dlqId']}")
    shows_no_secret(one)
    assert one.json()["body"] == redacted(SECRET_BODY)
    retried = api.post(f"/v2/dlq/retry/{entry['dlqId']}").json()["messageId"]
    again = endpoint.wait_for("/r/fail", 2)[1]
    assert again.body == SECRET_BODY and again.headers["Authorization"] == TOKEN
    assert again.headers["Upstash-Message-Id"] == retried
    shows_no_secret(api.get("/v2/events", params={"messageId": retried}))


def test_a_schedule_shows_digests_and_passes_redaction_on(
    api: httpx.Client, endpoint: Endpoint
) -> None:
    """Schedule get and list redact; each firing delivers originals and logs digests."""
    headers = secret_headers("body,header[Authorization]", **{"Upstash-Cron": "* * * * *"})
    created = api.post(
        f"/v2/schedules/{endpoint.url('/r/cron')}", content=SECRET_BODY, headers=headers
    )
    schedule_id = created.json()["scheduleId"]
    for answer in (api.get(f"/v2/schedules/{schedule_id}"), api.get("/v2/schedules")):
        shows_no_secret(answer)
    shown = api.get(f"/v2/schedules/{schedule_id}").json()
    assert shown["body"] == redacted(SECRET_BODY)
    assert shown["header"]["Authorization"] == [redacted(TOKEN)]
    [fired] = endpoint.wait_for("/r/cron", 1)
    assert fired.body == SECRET_BODY and fired.headers["Authorization"] == TOKEN
    api.delete(f"/v2/schedules/{schedule_id}")
    message_id = fired.headers["Upstash-Message-Id"]
    events_of(api, message_id, "DELIVERED")
    shows_no_secret(api.get("/v2/events", params={"scheduleId": schedule_id}))


def test_a_callback_gets_everything_and_its_logged_body_is_redacted(
    api: httpx.Client, endpoint: Endpoint
) -> None:
    """The callback URL receives sourceBody/sourceHeader in full (it is a delivery); the
    callback message's own body quotes them, so the API shows it redacted."""
    fields = "header[Authorization]"  # the body is not redacted: the callback's still is
    extra = {"Upstash-Callback": endpoint.url("/r/cb")}
    message_id = publish(api, endpoint.url("/r/src"), secret_headers(fields, **extra))
    [callback] = endpoint.wait_for("/r/cb", 1)
    sent = json.loads(callback.body)
    assert base64.b64decode(sent["sourceBody"]) == SECRET_BODY
    assert sent["sourceHeader"]["Authorization"] == [TOKEN]
    callback_id = callback.headers["Upstash-Message-Id"]
    listed = events_of(api, callback_id, "DELIVERED")
    shows_no_secret(api.get("/v2/events", params={"messageId": callback_id}))
    assert base64.b64decode(listed[-1]["body"]).decode() == redacted(callback.body)
    source = events_of(api, message_id, "DELIVERED")
    assert base64.b64decode(source[0]["body"]) == SECRET_BODY  # not asked to hide it


def test_batches_and_url_groups_carry_it_per_message(api: httpx.Client, endpoint: Endpoint) -> None:
    """A batch item's header applies to its own message, and to each copy of a fan-out."""
    api.post("/v2/topics/rg/endpoints", json={"endpoints": [{"url": endpoint.url("/r/g1")}]})
    api.post("/v2/topics/rg/endpoints", json={"endpoints": [{"url": endpoint.url("/r/g2")}]})
    hold = {"Upstash-Delay": HOLD}
    answer = api.post(
        "/v2/batch",
        json=[
            {
                "destination": "rg",
                "body": SECRET_BODY.decode(),
                "headers": {**hold, "Upstash-Redact-Fields": "body"},
            },
            {
                "destination": endpoint.url("/r/plain"),
                "body": SECRET_BODY.decode(),
                "headers": hold,
            },
        ],
    )
    assert answer.status_code == 201, answer.text
    fanned, plain = answer.json()
    for result in fanned:
        assert api.get(f"/v2/messages/{result['messageId']}").json()["body"] == redacted(
            SECRET_BODY
        )
    assert api.get(f"/v2/messages/{plain['messageId']}").json()["body"] == SECRET_BODY.decode()


# -- our client -----------------------------------------------------------------------------------


def test_our_client_publishes_with_redact(dev_server: DevServer, endpoint: Endpoint) -> None:
    """``redact=Redact(...)`` on a publish and a schedule; get_message, logs and DLQ show it."""
    endpoint.replies["/c/fail"] = lambda request: Response("no", 500)
    qstash = QStash(dev_server.token, base_url=dev_server.url)
    try:
        pending = qstash.publish_json(
            endpoint.url("/c/later"),
            {"card": "4111-secret"},
            headers={"Authorization": TOKEN},
            redact=Redact(body=True, headers=["Authorization"]),
            delay=HOLD,
        )
        shown = qstash.get_message(pending.message_id)
        assert shown["body"] == redacted(SECRET_BODY)
        assert shown["header"]["Authorization"] == [redacted(TOKEN)]
        failing = qstash.publish_json(
            endpoint.url("/c/fail"), {"card": "4111-secret"}, retries=0, redact=Redact(body=True)
        )
        endpoint.wait_for("/c/fail", 1)
        deadline = time.monotonic() + 5
        while not (page := qstash.list_dlq()).messages:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert page.messages[0].raw["body"] == redacted(SECRET_BODY)
        events = qstash.logs(message_ids=[failing.message_id]).events
        assert {base64.b64decode(e.raw["body"]) for e in events} == {redacted(SECRET_BODY).encode()}
        schedule_id = qstash.create_schedule(
            endpoint.url("/c/cron"), "0 0 1 1 *", body=SECRET_BODY, redact=Redact(headers=True),
            headers={"Authorization": TOKEN},
        )  # fmt: skip
        schedule = qstash.get_schedule(schedule_id)
        assert schedule.body == SECRET_BODY.decode()
        assert schedule.raw["header"]["Authorization"] == [redacted(TOKEN)]
    finally:
        qstash.close()


# -- the official SDKs ----------------------------------------------------------------------------


@pytest.fixture
def sdk(dev_server: DevServer) -> Iterator[OfficialQStash]:
    yield OfficialQStash(dev_server.token, base_url=dev_server.url, retry=False)


def test_python_sdk_redact_option(sdk: OfficialQStash, endpoint: Endpoint) -> None:
    """message.publish_json(redact=...), message.get, log.list and schedule.get hide them;
    the endpoint gets the originals."""
    body = json.dumps({"card": "4111-secret"}).encode()  # the SDK's json.dumps, with spaces
    pending = sdk.message.publish_json(
        url=endpoint.url("/py/later"),
        body={"card": "4111-secret"},
        headers={"Authorization": TOKEN},
        redact={"body": True, "header": ["Authorization"]},
        delay=HOLD,
    )
    message = sdk.message.get(pending.message_id)  # type: ignore[union-attr]
    assert message.body == redacted(body)
    assert message.headers is not None and message.headers["Authorization"] == [redacted(TOKEN)]
    sent = sdk.message.publish_json(
        url=endpoint.url("/py/now"),
        body={"card": "4111-secret"},
        headers={"Authorization": TOKEN},
        redact={"header": True},
    )
    [got] = endpoint.wait_for("/py/now", 1)
    assert got.headers["Authorization"] == TOKEN and got.body == body
    logs = sdk.log.list(filter={"message_id": sent.message_id}).logs  # type: ignore[union-attr, arg-type]
    assert logs and all(
        log.headers is not None and log.headers["Authorization"] == [redacted(TOKEN)]
        for log in logs
    )
    schedule_id = sdk.schedule.create_json(
        destination=endpoint.url("/py/cron"),
        cron="0 0 1 1 *",
        body={"card": "4111-secret"},
        redact={"body": True},
    )
    assert sdk.schedule.get(schedule_id).body == redacted(body)


@pytest.fixture(scope="module")
def js(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_oracle("redact.mjs", tmp_path_factory.mktemp("js-redact") / "qstash.db")


def test_js_sdk_publish_with_redact(js: dict[str, Any]) -> None:
    """publishJSON({redact}): messages.get and logs show digests, the endpoint originals."""
    body = json.dumps({"card": "4111-secret"}, separators=(",", ":"))
    assert js["publish"] == {
        "pendingBody": redacted(body),
        "pendingAuthorization": [redacted(TOKEN)],
        "pendingPublic": ["visible"],
        "receivedBody": body,
        "receivedAuthorization": TOKEN,
        "loggedBodies": [redacted(body)],
        "loggedAuthorization": [[redacted(TOKEN)]],
    }


def test_js_sdk_dlq_and_schedules_with_redact(js: dict[str, Any]) -> None:
    """dlq.listMessages redacts; dlq.retry delivers the original; schedules.get redacts."""
    body = json.dumps({"card": "4111-secret"}, separators=(",", ":"))
    assert js["dlq"] == {
        "listedBody": redacted(body),
        "retriedBody": body,
        "retriedAuthorization": TOKEN,
    }
    assert js["schedule"] == {"body": redacted(body), "authorization": [redacted(TOKEN)]}
