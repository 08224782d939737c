"""Bulk calls: ``DELETE /v2/messages``, ``GET``/``DELETE /v2/dlq`` and ``POST /v2/dlq/retry``
act only on what their ids, filters and count name."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from werkzeug.wrappers import Response

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


def test_a_label_filter_matches_any_of_a_messages_labels(
    api: httpx.Client, endpoint: Endpoint
) -> None:
    """A message published with Upstash-Label: a,b is matched by label=b."""
    both = pending(api, endpoint.url("/ab"), **{"Upstash-Label": "a,b"})
    other = pending(api, endpoint.url("/ab"), **{"Upstash-Label": "c"})
    assert api.delete("/v2/messages", params={"label": "b"}).json() == {"cancelled": 1}
    assert not is_pending(api, both) and is_pending(api, other)


# -- the dead-letter queue ------------------------------------------------------------------


def dead(api: httpx.Client, endpoint: Endpoint, path: str, **headers: str) -> str:
    """Publish a message that ``path`` refuses for good (489); return its message id."""
    endpoint.replies[path] = lambda request: Response(
        "gone", 489, headers={"Upstash-NonRetryable-Error": "true"}
    )
    response = api.post(f"/v2/publish/{endpoint.url(path)}", headers=headers, content=b"{}")
    message_id: str = response.json()["messageId"]
    return message_id


def dlq(api: httpx.Client, count: int) -> list[dict[str, Any]]:
    """Wait until the DLQ holds ``count`` entries; return them."""
    deadline = time.monotonic() + 5
    while len(entries := api.get("/v2/dlq").json()["messages"]) < count:
        assert time.monotonic() < deadline, entries
        time.sleep(0.02)
    return entries


def dlq_message_ids(api: httpx.Client) -> set[str]:
    """Return the message ids the DLQ holds now."""
    return {entry["messageId"] for entry in api.get("/v2/dlq").json()["messages"]}


def test_dlq_delete_with_unmatched_filter_deletes_nothing(
    api: httpx.Client, endpoint: Endpoint
) -> None:
    """DELETE /v2/dlq?url=<no match>&count=100 deletes nothing (it used to empty the DLQ)."""
    ids = {dead(api, endpoint, "/d1"), dead(api, endpoint, "/d2")}
    dlq(api, 2)
    answer = api.delete("/v2/dlq", params={"url": "http://nowhere.example/", "count": "100"})
    assert answer.json() == {"deleted": 0}
    assert dlq_message_ids(api) == ids


def test_dlq_retry_by_label_retries_that_label(api: httpx.Client, endpoint: Endpoint) -> None:
    """POST /v2/dlq/retry?label=l1 republishes the l1 entry and only it."""
    l1 = dead(api, endpoint, "/r1", **{"Upstash-Label": "l1"})
    l2 = dead(api, endpoint, "/r2", **{"Upstash-Label": "l2"})
    dlq(api, 2)
    endpoint.replies["/r1"] = lambda request: Response("ok")
    answer = api.post("/v2/dlq/retry", params={"label": "l1"}).json()
    assert len(answer["responses"]) == 1 and "cursor" not in answer
    retried = answer["responses"][0]["messageId"]
    assert endpoint.wait_for("/r1", 2)[1].headers["Upstash-Message-Id"] == retried
    assert dlq_message_ids(api) == {l2} and l1 != retried


def test_dlq_repeated_parameter_means_either(api: httpx.Client, endpoint: Endpoint) -> None:
    """label=l1&label=l2 deletes the entries labelled l1 or l2, not the unlabelled one."""
    dead(api, endpoint, "/e1", **{"Upstash-Label": "l1"})
    dead(api, endpoint, "/e2", **{"Upstash-Label": "l2"})
    kept = dead(api, endpoint, "/e3")
    dlq(api, 3)
    assert api.delete("/v2/dlq?label=l1&label=l2").json() == {"deleted": 2}
    assert dlq_message_ids(api) == {kept}


def test_dlq_flow_control_key_filter(api: httpx.Client, endpoint: Endpoint) -> None:
    """flowControlKey selects the entries published under that key."""
    keyed = dead(api, endpoint, "/f1", **flow("fk"))
    kept = dead(api, endpoint, "/f2")
    dlq(api, 2)
    listed = api.get("/v2/dlq", params={"flowControlKey": "fk"}).json()["messages"]
    assert [entry["messageId"] for entry in listed] == [keyed]
    assert api.delete("/v2/dlq", params={"flowControlKey": "fk"}).json() == {"deleted": 1}
    assert dlq_message_ids(api) == {kept}


@pytest.mark.parametrize("query", ["labeel=l1", "host=127.0.0.1", "path=/u1", "label=", "count=0"])
@pytest.mark.parametrize(("method", "path"), [("DELETE", "/v2/dlq"), ("POST", "/v2/dlq/retry")])
def test_dlq_unknown_or_empty_filter_is_400_and_touches_nothing(
    api: httpx.Client, endpoint: Endpoint, method: str, path: str, query: str
) -> None:
    """A misspelt field, a message-only field (host, path) or an empty one is a 400."""
    message_id = dead(api, endpoint, "/u1", **{"Upstash-Label": "l1"})
    dlq(api, 1)
    response = api.request(method, f"{path}?{query}")
    assert response.status_code == 400 and "error" in response.json()
    assert dlq_message_ids(api) == {message_id}
    assert api.get(f"/v2/dlq?{query}").status_code == 400


def test_dlq_count_and_cursor_page_through_a_bulk_delete(
    api: httpx.Client, endpoint: Endpoint
) -> None:
    """count=1 deletes one per call and answers a cursor while more match, none at the end."""
    for n in range(3):
        dead(api, endpoint, f"/p{n}", **{"Upstash-Label": "page"})
    dlq(api, 3)
    answers, cursor = [], None
    for _ in range(3):
        params = {"label": "page", "count": "1", **({"cursor": cursor} if cursor else {})}
        answers.append(api.delete("/v2/dlq", params=params).json())
        cursor = answers[-1].get("cursor")
    assert [a["deleted"] for a in answers] == [1, 1, 1]
    assert [("cursor" in a) for a in answers] == [True, True, False]
    assert dlq_message_ids(api) == set()


def test_dlq_retry_all_with_count(api: httpx.Client, endpoint: Endpoint) -> None:
    """retry with only count=1 (the SDK's all: true) retries one entry, the oldest."""
    dead(api, endpoint, "/o1")
    dead(api, endpoint, "/o2")
    entries = dlq(api, 2)
    endpoint.replies.clear()  # the retried message is delivered this time
    answer = api.post("/v2/dlq/retry", params={"count": "1"}).json()
    assert len(answer["responses"]) == 1 and "cursor" in answer
    assert [entry["dlqId"] for entry in dlq(api, 1)] == [entries[1]["dlqId"]]


def test_dlq_ids_in_query_or_body_name_exactly_those(api: httpx.Client, endpoint: Endpoint) -> None:
    """dlqIds, repeated in the query or in a JSON body, list and delete exactly those."""
    for n in range(3):
        dead(api, endpoint, f"/i{n}")
    ids = [entry["dlqId"] for entry in dlq(api, 3)]
    listed = api.get(f"/v2/dlq?dlqIds={ids[0]}&dlqIds={ids[1]}").json()["messages"]
    assert [entry["dlqId"] for entry in listed] == ids[:2]
    assert api.delete(f"/v2/dlq?dlqIds={ids[0]}").json() == {"deleted": 1}
    assert api.request("DELETE", "/v2/dlq", json={"dlqIds": [ids[1]]}).json() == {"deleted": 1}
    assert [entry["dlqId"] for entry in dlq(api, 1)] == ids[2:]


def test_dlq_label_filter_matches_any_of_an_entrys_labels(
    api: httpx.Client, endpoint: Endpoint
) -> None:
    """A DLQ entry labelled a,b is listed and deleted by label=b."""
    both = dead(api, endpoint, "/lab", **{"Upstash-Label": "a,b"})
    dead(api, endpoint, "/lc", **{"Upstash-Label": "c"})
    dlq(api, 2)
    listed = api.get("/v2/dlq", params={"label": "b"}).json()["messages"]
    assert [(e["messageId"], e["label"], e["labels"]) for e in listed] == [(both, "a", ["a", "b"])]
    assert api.delete("/v2/dlq", params={"label": "b"}).json() == {"deleted": 1}
