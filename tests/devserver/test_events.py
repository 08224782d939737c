"""The events (logs) API: states recorded as the dev server moves a message, QStash's
filters and cursor, bounded retention; through our client and both official SDKs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from qstash import QStash as OfficialQStash
from qstash.log import LogState
from werkzeug.wrappers import Response

from app.devserver import DevServer, events
from app.qstash.client import QStash
from tests.devserver.endpoint import Endpoint
from tests.devserver.js_oracle import run_oracle

HOLD = "1d"


def states(api: httpx.Client, message_id: str) -> list[str]:
    answer = api.get("/v2/events", params={"messageId": message_id})
    assert answer.status_code == 200, answer.text
    return [event["state"] for event in answer.json()["events"]]


def settled(api: httpx.Client, message_id: str, last: str, timeout: float = 5) -> list[str]:
    """Wait until the newest event of ``message_id`` is ``last``; return its states."""
    deadline = time.monotonic() + timeout
    while (seen := states(api, message_id)) and seen[0] != last:
        assert time.monotonic() < deadline, f"{message_id}: {seen}"
        time.sleep(0.02)
    return seen


def publish(api: httpx.Client, url: str, body: bytes = b"{}", **headers: str) -> str:
    answer = api.post(f"/v2/publish/{url}", content=body, headers=headers)
    assert answer.status_code == 201, answer.text
    message_id: str = answer.json()["messageId"]
    return message_id


# -- states -------------------------------------------------------------------------------


def test_a_delivered_message_is_created_active_delivered(
    api: httpx.Client, endpoint: Endpoint
) -> None:
    """Newest first, with the body (base64), the label, the answer and the due time."""
    message_id = publish(
        api, endpoint.url("/ev/ok"), b'{"a":1}', **{"Upstash-Label": "l1", "X-No": "1"}
    )
    assert settled(api, message_id, "DELIVERED") == ["DELIVERED", "ACTIVE", "CREATED"]
    delivered, _, created = api.get("/v2/events", params={"messageId": message_id}).json()["events"]
    assert delivered["responseStatus"] == 200 and delivered["responseBody"] == "ok"
    assert delivered["body"] == "eyJhIjoxfQ==" and delivered["label"] == "l1"
    assert delivered["url"] == endpoint.url("/ev/ok") and delivered["maxRetries"] == 3
    assert created["nextDeliveryTime"] == created["notBefore"]
    assert created["time"] <= delivered["time"]


def test_a_failing_message_retries_then_fails(api: httpx.Client, endpoint: Endpoint) -> None:
    """ERROR then RETRY (with the next delivery time) per failed attempt; FAILED at the end."""
    endpoint.replies["/ev/fail"] = lambda request: Response("broken", 503)
    message_id = publish(
        api,
        endpoint.url("/ev/fail"),
        **{"Upstash-Retries": "1", "Upstash-Retry-Delay": "1000"},
    )
    assert settled(api, message_id, "FAILED") == [
        "FAILED",
        "ERROR",
        "ACTIVE",
        "RETRY",
        "ERROR",
        "ACTIVE",
        "CREATED",
    ]
    listed = api.get("/v2/events", params={"messageId": message_id}).json()["events"]
    failed, retry = listed[0], listed[3]
    assert (failed["responseStatus"], failed["responseBody"]) == (503, "broken")
    assert retry["nextDeliveryTime"] > retry["time"] - 1
    assert retry["retryDelayExpr"] == "1000"


def test_a_refused_connection_is_an_error_with_its_reason(api: httpx.Client) -> None:
    """No HTTP answer: the event carries the transport's error, no status."""
    message_id = publish(api, "http://127.0.0.1:9/nothing", **{"Upstash-Retries": "0"})
    settled(api, message_id, "FAILED")
    error = api.get("/v2/events", params={"messageId": message_id, "state": "ERROR"})
    (event,) = error.json()["events"]
    assert event["error"] and "responseStatus" not in event


def test_cancelling_records_cancel_requested_then_canceled(
    api: httpx.Client, endpoint: Endpoint
) -> None:
    """Both the single and the bulk cancel log the two states; CANCELLED filters too."""
    one = publish(api, endpoint.url("/ev/later"), **{"Upstash-Delay": HOLD})
    two = publish(api, endpoint.url("/ev/later"), **{"Upstash-Delay": HOLD})
    assert api.delete(f"/v2/messages/{one}").status_code == 202
    assert api.delete("/v2/messages", params={"messageIds": two}).json() == {"cancelled": 1}
    for message_id in (one, two):
        assert states(api, message_id) == ["CANCELED", "CANCEL_REQUESTED", "CREATED"]
    spelled = api.get("/v2/events", params={"state": "CANCELLED"}).json()["events"]
    assert {event["messageId"] for event in spelled} == {one, two}


def test_schedules_dlq_retries_and_callbacks_are_created_too(
    api: httpx.Client, endpoint: Endpoint
) -> None:
    """Every way a message comes to exist logs CREATED: a callback here."""
    publish(api, endpoint.url("/ev/with-callback"), **{"Upstash-Callback": endpoint.url("/ev/cb")})
    endpoint.wait_for("/ev/cb", 1)
    deadline = time.monotonic() + 5
    while True:
        listed = api.get("/v2/events", params={"url": endpoint.url("/ev/cb")}).json()["events"]
        if [e["state"] for e in listed][:1] == ["DELIVERED"] or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert [e["state"] for e in listed] == ["DELIVERED", "ACTIVE", "CREATED"]


# -- filters, cursor, bounds --------------------------------------------------------------


def test_filters_combine_and_repeat(api: httpx.Client, endpoint: Endpoint) -> None:
    """Different fields must all match; a repeated field means any of its values."""
    a = publish(api, endpoint.url("/ev/a"), **{"Upstash-Label": "la", "Upstash-Delay": HOLD})
    b = publish(api, endpoint.url("/ev/b"), **{"Upstash-Label": "lb", "Upstash-Delay": HOLD})
    c = publish(api, endpoint.url("/ev/c"), **{"Upstash-Delay": HOLD})

    def ids(**params: Any) -> set[str]:
        answer = api.get("/v2/events", params=params)
        assert answer.status_code == 200, answer.text
        return {event["messageId"] for event in answer.json()["events"]}

    assert ids(label=["la", "lb"]) == {a, b}
    assert ids(label="la", url=endpoint.url("/ev/b")) == set()
    assert ids(path="/ev/c") == {c}
    assert ids(host="127.0.0.1", state="CREATED", messageIds=[a, c]) == {a, c}
    assert ids(state="IN_PROGRESS", messageIds=[a, b, c]) == set()
    assert ids(fromDate=str(int(time.time() * 1000) + 60_000)) == set()
    assert ids(toDate="0") == set()


def test_the_cursor_pages_through_everything_once(api: httpx.Client, endpoint: Endpoint) -> None:
    """count events per page, newest first, each exactly once; no cursor on the last."""
    for n in range(7):
        publish(api, endpoint.url(f"/ev/page{n}"), **{"Upstash-Delay": HOLD})
    pages, cursor = [], None
    while True:
        params = {"count": "3", **({"cursor": cursor} if cursor else {})}
        answer = api.get("/v2/events", params=params).json()
        pages.append([e["url"] for e in answer["events"]])
        cursor = answer.get("cursor")
        if cursor is None:
            break
    assert [len(page) for page in pages] == [3, 3, 1]
    assert sum(pages, []) == [endpoint.url(f"/ev/page{n}") for n in reversed(range(7))]


@pytest.mark.parametrize(
    "query",
    [
        "labeel=x",
        "state=DONE",
        "count=0",
        "count=1001",
        "count=x",
        "cursor=abc",
        "fromDate=yesterday",
        "label=",
        "count=1&count=2",
    ],
)
def test_bad_queries_are_refused(api: httpx.Client, query: str) -> None:
    """A typo, an unknown state or an out-of-range count is a 400 saying why."""
    answer = api.get(f"/v2/events?{query}")
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]


def test_logs_is_the_same_list(api: httpx.Client, endpoint: Endpoint) -> None:
    """/v2/logs (the docs' path) answers as /v2/events (the SDKs' path) does."""
    publish(api, endpoint.url("/ev/alias"), **{"Upstash-Delay": HOLD})
    assert api.get("/v2/logs").json() == api.get("/v2/events").json()


def test_retention_keeps_the_newest_events(
    api: httpx.Client, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_EVENTS the oldest go; a body over BODY_MAX is left out of the logs."""
    monkeypatch.setattr(events, "MAX_EVENTS", 4)
    monkeypatch.setattr(events, "BODY_MAX", 8)
    for n in range(6):
        publish(
            api,
            endpoint.url(f"/ev/keep{n}"),
            b"12345678" + b"9" * (n % 2),
            **{"Upstash-Delay": HOLD},
        )
    listed = api.get("/v2/events").json()["events"]
    assert [e["url"] for e in listed] == [endpoint.url(f"/ev/keep{n}") for n in (5, 4, 3, 2)]
    assert ["body" in e for e in listed] == [False, True, False, True]


# -- our client ---------------------------------------------------------------------------


def test_client_logs(dev_server: DevServer, endpoint: Endpoint) -> None:
    """QStash.logs filters (lists: any of) and pages like the API; events() is the same."""
    qstash = QStash(dev_server.token, base_url=dev_server.url)
    try:
        result = qstash.publish_json(endpoint.url("/ev/client"), {"c": 1}, label="cl")
        deadline = time.monotonic() + 5
        while not qstash.logs(messageId=result.message_id, state="DELIVERED").events:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        page = qstash.logs(message_ids=[result.message_id])
        assert [e.state for e in page.events] == ["DELIVERED", "ACTIVE", "CREATED"]
        assert page.events[0].labels == ("cl",) and page.events[0].response_status == 200
        assert qstash.events(label=["cl", "other"], count=1).cursor is not None
        with pytest.raises(ValueError):
            qstash.logs(count=0)
        with pytest.raises(ValueError):
            qstash.logs(label=[])
    finally:
        qstash.close()


# -- the official SDKs ----------------------------------------------------------------------


@pytest.fixture
def sdk(dev_server: DevServer) -> Iterator[OfficialQStash]:
    yield OfficialQStash(dev_server.token, base_url=dev_server.url, retry=False)


def test_python_sdk_sees_the_delivery_as_its_own_suite_checks_it(
    sdk: OfficialQStash, endpoint: Endpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    """The official suite's check: log.list(message_id, state=DELIVERED) has one entry."""
    result = sdk.message.publish_json(url=endpoint.url("/ev/sdk"), body={"p": 1}, label="py")
    message_id = result.message_id  # type: ignore[union-attr]
    deadline = time.monotonic() + 5
    while not (
        logs := sdk.log.list(filter={"message_id": message_id, "state": LogState.DELIVERED}).logs
    ):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert len(logs) == 1
    (log,) = logs
    assert (log.url, log.label, log.response_status) == (endpoint.url("/ev/sdk"), "py", 200)
    assert log.body_base64 == "eyJwIjogMX0="
    every = sdk.log.list(filter={"message_ids": [message_id]}, count=10)
    assert [entry.state for entry in every.logs] == [
        LogState.DELIVERED,
        LogState.ACTIVE,
        LogState.CREATED,
    ]


def test_python_sdk_parses_every_state(
    sdk: OfficialQStash, endpoint: Endpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    """CANCEL_REQUESTED and CANCELED are spelled so that LogState parses them."""
    result = sdk.message.publish_json(url=endpoint.url("/ev/sdk-later"), body={}, delay=HOLD)
    sdk.message.cancel(result.message_id)  # type: ignore[union-attr]
    page = sdk.log.list(filter={"state": LogState.CANCELED})
    assert [entry.message_id for entry in page.logs] == [result.message_id]  # type: ignore[union-attr]
    assert page.cursor is None


@pytest.fixture(scope="module")
def js(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_oracle("events.mjs", tmp_path_factory.mktemp("js-events") / "qstash.db")


def test_js_sdk_logs_a_delivery(js: dict[str, Any]) -> None:
    """client.logs by messageIds, then by state + label, with the answer and the body."""
    assert js["delivered"] == {
        "states": ["DELIVERED", "ACTIVE", "CREATED"],
        "byStateAndLabel": [True],
        "status": 200,
        "body": '{"e":1}',
    }


def test_js_sdk_logs_retries_and_the_failure(js: dict[str, Any]) -> None:
    """Each failed attempt is ERROR (+ RETRY with nextDeliveryTime); the last is FAILED."""
    assert js["failed"] == {
        "states": ["FAILED", "ERROR", "ACTIVE", "RETRY", "ERROR", "ACTIVE", "CREATED"],
        "status": 500,
        "responseBody": "failed on purpose",
        "retryHasNextDelivery": True,
    }


def test_js_sdk_pages_with_the_cursor(js: dict[str, Any]) -> None:
    """count: 2 answers a cursor (a string) whose page holds other events."""
    assert js["paging"] == {"sizes": [2, 2], "cursor": "string", "disjoint": True}


def test_js_sdk_typo_is_refused(js: dict[str, Any]) -> None:
    """A misspelt filter is a 400, never "no filter"."""
    assert js["typo"] == "rejected: 400"
