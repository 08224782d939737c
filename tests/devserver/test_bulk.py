"""Bulk calls: ``DELETE /v2/messages`` act only on what their ids or filters name."""

from __future__ import annotations

import httpx
import pytest

from tests.devserver.endpoint import Endpoint

HOLD = {"Upstash-Delay": "1d"}  # keeps a message pending for the whole test


def pending(api: httpx.Client, url: str, **headers: str) -> str:
    """Publish a message that stays pending; return its id."""
    response = api.post(f"/v2/publish/{url}", headers={**HOLD, **headers}, content=b"{}")
    assert response.status_code == 201, response.text
    message_id: str = response.json()["messageId"]
    return message_id


def is_pending(api: httpx.Client, message_id: str) -> bool:
    """Return whether ``message_id`` still waits for delivery."""
    return api.get(f"/v2/messages/{message_id}").status_code == 200


def flow(key: str) -> dict[str, str]:
    """Return the headers publishing under the flow-control key ``key``."""
    return {"Upstash-Flow-Control-Key": key, "Upstash-Flow-Control-Value": "parallelism=1"}


def test_cancel_by_flow_control_key_cancels_only_that_key(
    api: httpx.Client, endpoint: Endpoint
) -> None:
    """?flowControlKey=cancel-me&count=100 cancels the one message under that key."""
    doomed = pending(api, endpoint.url("/a"), **flow("cancel-me"))
    kept = pending(api, endpoint.url("/a"), **flow("keep-me"))
    response = api.delete("/v2/messages", params={"flowControlKey": "cancel-me", "count": "100"})
    assert response.json() == {"cancelled": 1}
    assert not is_pending(api, doomed) and is_pending(api, kept)


def test_count_bounds_how_many_are_cancelled(api: httpx.Client, endpoint: Endpoint) -> None:
    """?count=1 with three pending cancels one, the oldest; the other two stay."""
    ids = [pending(api, endpoint.url("/c")) for _ in range(3)]
    assert api.delete("/v2/messages", params={"count": "1"}).json() == {"cancelled": 1}
    assert [is_pending(api, i) for i in ids] == [False, True, True]


def test_no_filter_at_all_cancels_everything(api: httpx.Client, endpoint: Endpoint) -> None:
    """A request naming nothing means every pending message, as QStash's cancel-all."""
    ids = [pending(api, endpoint.url("/all")) for _ in range(3)]
    assert api.delete("/v2/messages").json() == {"cancelled": 3}
    assert not any(is_pending(api, i) for i in ids)


@pytest.mark.parametrize(
    ("field", "value_of"),
    [
        ("url", lambda e: e.url("/one")),
        ("host", lambda e: "127.0.0.1"),
        ("path", lambda e: "/one"),
        ("label", lambda e: "l1"),
        ("queueName", lambda e: "q1"),
    ],
)
def test_each_filter_field_selects_its_messages(
    api: httpx.Client, endpoint: Endpoint, field: str, value_of: object
) -> None:
    """Each documented filter field cancels the messages it matches and no other."""
    one = api.post(
        f"/v2/enqueue/q1/{endpoint.url('/one')}",
        headers={**HOLD, "Upstash-Label": "l1"},
        content=b"{}",
    ).json()["messageId"]
    other = pending(api, "http://localhost:9/two")
    value = value_of(endpoint)  # type: ignore[operator]
    assert api.delete("/v2/messages", params={field: value}).json() == {"cancelled": 1}
    assert not is_pending(api, one) and is_pending(api, other)


def test_repeated_parameter_means_either_and_fields_combine(
    api: httpx.Client, endpoint: Endpoint
) -> None:
    """label=a&label=b matches either label; a second field must match too."""
    a = pending(api, endpoint.url("/x"), **{"Upstash-Label": "a"})
    b = pending(api, endpoint.url("/y"), **{"Upstash-Label": "b"})
    c = pending(api, endpoint.url("/x"), **{"Upstash-Label": "c"})
    answer = api.delete("/v2/messages?label=a&label=b&label=c&path=/x").json()
    assert answer == {"cancelled": 2}
    assert [is_pending(api, i) for i in (a, b, c)] == [False, True, False]


@pytest.mark.parametrize(
    "query", ["labeel=x", "label=", "dlqIds=x", "count=0", "count=two", "fromDate=yesterday"]
)
def test_unknown_or_empty_filters_are_400_and_cancel_nothing(
    api: httpx.Client, endpoint: Endpoint, query: str
) -> None:
    """A misspelt or empty filter is refused, never taken for "cancel everything"."""
    message_id = pending(api, endpoint.url("/safe"))
    response = api.delete(f"/v2/messages?{query}")
    assert response.status_code == 400
    assert "error" in response.json()
    assert is_pending(api, message_id)


def test_ids_in_the_body_cancel_exactly_those(api: httpx.Client, endpoint: Endpoint) -> None:
    """The Python SDK's {"messageIds": [...]} body names messages; an empty list names none."""
    ids = [pending(api, endpoint.url("/b")) for _ in range(2)]
    assert api.request("DELETE", "/v2/messages", json={"messageIds": []}).json() == {"cancelled": 0}
    assert api.request("DELETE", "/v2/messages", json={"messageIds": ids[:1]}).json() == {
        "cancelled": 1
    }
    assert is_pending(api, ids[1])
    bad = api.request("DELETE", "/v2/messages", json={"messageIds": ids, "label": "x"})
    assert bad.status_code == 400 and is_pending(api, ids[1])


def test_created_at_bounds_select_by_time(api: httpx.Client, endpoint: Endpoint) -> None:
    """fromDate/toDate (ms, inclusive) bound the message's createdAt."""
    message_id = pending(api, endpoint.url("/t"))
    created = api.get(f"/v2/messages/{message_id}").json()["createdAt"]
    for bounds in ({"toDate": created - 1}, {"fromDate": created + 1}):
        assert api.delete("/v2/messages", params=bounds).json() == {"cancelled": 0}
    both = {"fromDate": created, "toDate": created}
    assert api.delete("/v2/messages", params=both).json() == {"cancelled": 1}


def test_caller_ip_filter(api: httpx.Client, endpoint: Endpoint) -> None:
    """callerIp matches the publisher's address."""
    ids = [pending(api, endpoint.url("/ip")) for _ in range(2)]
    assert api.delete("/v2/messages", params={"callerIp": "10.9.9.9"}).json() == {"cancelled": 0}
    assert api.delete("/v2/messages", params={"callerIp": "127.0.0.1"}).json() == {"cancelled": 2}
    assert not any(is_pending(api, i) for i in ids)
