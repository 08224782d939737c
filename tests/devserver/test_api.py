"""The v2 REST API: authentication, QStash's error shapes, and each resource's calls."""

from __future__ import annotations

import httpx
import pytest

from app.devserver import DevServer
from app.devserver.publish import APIError, check_destination
from tests.devserver.endpoint import Endpoint

HOLD = {"Upstash-Delay": "1d"}  # keeps a message pending for the whole test


def test_missing_token_is_401(dev_server: DevServer) -> None:
    """A call without Authorization is refused with QStash's error shape."""
    response = httpx.get(f"{dev_server.url}/v2/keys")
    assert response.status_code == 401
    assert "error" in response.json()


@pytest.mark.parametrize("header", ["Bearer wrong", "Basic abc", "Bearer", "token"])
def test_wrong_token_is_401(dev_server: DevServer, header: str) -> None:
    """A wrong token or scheme is refused."""
    response = httpx.get(f"{dev_server.url}/v2/keys", headers={"Authorization": header})
    assert response.status_code == 401


def test_keys_are_the_dev_signing_keys(api: httpx.Client, dev_server: DevServer) -> None:
    """GET /v2/keys answers the keys deliveries are signed with."""
    assert api.get("/v2/keys").json() == {
        "current": dev_server.current_key,
        "next": dev_server.next_key,
    }


@pytest.mark.parametrize(
    ("destination", "headers", "status", "fragment"),
    [
        ("ftp://example.com/x", {}, 400, "scheme"),
        ("https:///nohost", {}, 400, "host"),
        ("my-group", {}, 404, "not found"),
        ("http://example.com/x", {"Upstash-Delay": "soon"}, 400, "Upstash-Delay"),
        ("http://example.com/x", {"Upstash-Not-Before": "tomorrow"}, 400, "Not-Before"),
        ("http://example.com/x", {"Upstash-Retries": "-1"}, 400, "Upstash-Retries"),
        ("http://example.com/x", {"Upstash-Retries": "many"}, 400, "Upstash-Retries"),
        ("http://example.com/x", {"Upstash-Timeout": "1y"}, 400, "Upstash-Timeout"),
        # QStash refuses a bare number here ("missing unit in duration").
        ("http://example.com/x", {"Upstash-Delay": "30"}, 400, "Upstash-Delay"),
        ("http://example.com/x", {"Upstash-Timeout": "30"}, 400, "Upstash-Timeout"),
        ("http://example.com/x", {"Upstash-Method": "BREW"}, 400, "Upstash-Method"),
        ("http://example.com/x", {"Upstash-Retry-Delay": "os.system(1)"}, 400, "Retry-Delay"),
        ("http://example.com/x", {"Upstash-Callback": "javascript:alert(1)"}, 400, "Callback"),
        (
            "http://example.com/x",
            {"Upstash-Flow-Control-Key": "k", "Upstash-Flow-Control-Value": "speed=3"},
            400,
            "Flow",
        ),
        ("http://example.com/x", {"Upstash-Flow-Control-Value": "rate=3"}, 400, "Flow"),
    ],
)
def test_bad_publish_input_is_a_clear_4xx(
    api: httpx.Client, destination: str, headers: dict[str, str], status: int, fragment: str
) -> None:
    """Every kind of bad publish input gets a 4xx with a message naming the problem."""
    response = api.post(f"/v2/publish/{destination}", headers=headers, content=b"{}")
    assert response.status_code == status
    assert fragment.lower() in response.json()["error"].lower()


def test_unknown_endpoint_is_404_and_wrong_method_405(api: httpx.Client) -> None:
    """Unknown paths answer 404, known paths with another method 405, both as JSON."""
    assert api.get("/v2/nothing").status_code == 404
    response = api.put("/v2/keys")
    assert response.status_code == 405
    assert "error" in response.json()


def test_published_message_can_be_read_and_cancelled(api: httpx.Client, endpoint: Endpoint) -> None:
    """A pending message is readable with its headers and body until cancelled."""
    headers = {**HOLD, "Upstash-Forward-X-Trace": "t1", "Content-Type": "text/plain"}
    message_id = api.post(
        f"/v2/publish/{endpoint.url('/m?a=1')}", headers=headers, content=b"hello"
    ).json()["messageId"]
    message = api.get(f"/v2/messages/{message_id}").json()
    assert message["url"] == endpoint.url("/m?a=1")
    assert message["body"] == "hello"
    assert message["header"]["X-Trace"] == ["t1"]
    assert api.delete(f"/v2/messages/{message_id}").status_code == 202
    assert api.get(f"/v2/messages/{message_id}").status_code == 404


def test_bulk_cancel_by_ids(api: httpx.Client, endpoint: Endpoint) -> None:
    """DELETE /v2/messages with messageIds cancels exactly those messages."""
    ids = [
        api.post(f"/v2/publish/{endpoint.url('/b')}", headers=HOLD).json()["messageId"]
        for _ in range(3)
    ]
    response = api.request("DELETE", "/v2/messages", json={"messageIds": ids[:2]})
    assert response.json() == {"cancelled": 2}
    assert api.get(f"/v2/messages/{ids[2]}").status_code == 200


def test_batch_is_atomic_on_bad_item(api: httpx.Client, endpoint: Endpoint) -> None:
    """A batch with one invalid item is refused whole, naming the item."""
    batch = [
        {"destination": endpoint.url("/ok"), "headers": HOLD, "body": "{}"},
        {"destination": "gopher://x", "body": "{}"},
    ]
    response = api.post("/v2/batch", json=batch)
    assert response.status_code == 400
    assert "batch item 1" in response.json()["error"]
    assert endpoint.received == []


@pytest.mark.parametrize("body", [b"not json", b"{}", b"[]", b'[{"body": "x"}]'])
def test_malformed_batch_is_400(api: httpx.Client, body: bytes) -> None:
    """A batch body that is not a non-empty array of items is a 400."""
    assert api.post("/v2/batch", content=body).status_code == 400


@pytest.mark.parametrize(
    "cron", ["", "* * * *", "61 * * * *", "CRON_TZ=Mars/Olympus * * * * *", "every minute"]
)
def test_bad_cron_is_400(api: httpx.Client, cron: str) -> None:
    """A schedule with a missing or invalid cron is refused."""
    response = api.post("/v2/schedules/http://example.com/x", headers={"Upstash-Cron": cron})
    assert response.status_code == 400
    assert "cron" in response.json()["error"].lower()


def test_schedule_upsert_by_id(api: httpx.Client) -> None:
    """Creating a schedule with an existing Upstash-Schedule-Id updates it."""
    headers = {"Upstash-Cron": "0 9 * * *", "Upstash-Schedule-Id": "digest"}
    api.post("/v2/schedules/http://example.com/a", headers=headers)
    api.post(
        "/v2/schedules/http://example.com/b", headers={**headers, "Upstash-Cron": "0 10 * * *"}
    )
    schedules = api.get("/v2/schedules").json()
    assert [(s["scheduleId"], s["destination"], s["cron"]) for s in schedules] == [
        ("digest", "http://example.com/b", "0 10 * * *")
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"queueName": "", "parallelism": 1},
        {"queueName": "q", "parallelism": 0},
        {"queueName": "q", "parallelism": "2"},
        {"queueName": "a/b"},
        ["q"],
    ],
)
def test_bad_queue_is_400(api: httpx.Client, body: object) -> None:
    """Queue upserts with a bad name or parallelism are refused."""
    assert api.post("/v2/queues", json=body).status_code == 400


def test_queue_lifecycle(api: httpx.Client, endpoint: Endpoint) -> None:
    """Queues are upserted, listed with their lag, paused, resumed and deleted."""
    assert api.post("/v2/queues", json={"queueName": "emails", "parallelism": 2}).status_code == 200
    api.post(f"/v2/enqueue/emails/{endpoint.url('/q')}", headers=HOLD)
    assert api.post("/v2/queues/emails/pause").status_code == 200
    queue = api.get("/v2/queues/emails").json()
    assert (queue["parallelism"], queue["lag"], queue["paused"]) == (2, 1, True)
    api.post("/v2/queues/emails/resume")
    assert api.get("/v2/queues").json()[0]["paused"] is False
    assert api.delete("/v2/queues/emails").status_code == 200
    assert api.get("/v2/queues/emails").status_code == 404


def test_unknown_ids_are_404(api: httpx.Client) -> None:
    """Messages, schedules, queues and DLQ entries that do not exist answer 404."""
    for path in ("/v2/messages/msg_x", "/v2/schedules/scd_x", "/v2/queues/nope", "/v2/dlq/dlq_x"):
        assert api.get(path).status_code == 404, path
    assert api.post("/v2/dlq/retry/dlq_x").status_code == 404


def test_oversized_body_is_413(api: httpx.Client) -> None:
    """A body over the API's 10 MiB limit is refused with 413, not a server error."""
    response = api.post("/v2/publish/http://example.com/x", content=b"x" * (10 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert "error" in response.json()


@pytest.mark.parametrize(
    "destination", ["http://exa mple.com/", "http://x.com/\x00", "http://x.com/\n"]
)
def test_destination_with_whitespace_or_control_characters_is_refused(destination: str) -> None:
    """A destination carrying whitespace or control characters is a 400."""
    with pytest.raises(APIError) as caught:
        check_destination(destination)
    assert caught.value.status == 400


def test_several_labels_answer_the_first_as_label_and_all_as_labels(api: httpx.Client) -> None:
    """Upstash-Label: a,b is two labels: "label": "a", "labels": ["a", "b"], as QStash answers."""
    headers = {**HOLD, "Upstash-Label": "a, b"}
    message_id = api.post("/v2/publish/http://example.com/l", headers=headers).json()["messageId"]
    message = api.get(f"/v2/messages/{message_id}").json()
    assert (message["label"], message["labels"]) == ("a", ["a", "b"])
    cron = {"Upstash-Cron": "0 9 * * *", "Upstash-Schedule-Id": "labelled", **headers}
    api.post("/v2/schedules/http://example.com/l", headers=cron)
    schedule = api.get("/v2/schedules/labelled").json()
    assert (schedule["label"], schedule["labels"]) == ("a", ["a", "b"])
    plain = api.post("/v2/publish/http://example.com/l", headers=HOLD).json()["messageId"]
    assert {"label", "labels"}.isdisjoint(api.get(f"/v2/messages/{plain}").json())


def test_an_empty_body_is_left_out_of_every_view(api: httpx.Client) -> None:
    """A schedule or message published without a body lists no body field (QStash omits it)."""
    cron = {"Upstash-Cron": "0 9 * * *", "Upstash-Schedule-Id": "bodiless"}
    api.post("/v2/schedules/http://example.com/none", headers=cron)
    message_id = api.post("/v2/publish/http://example.com/none", headers=HOLD).json()["messageId"]
    views = [
        api.get("/v2/schedules/bodiless").json(),
        api.get("/v2/schedules").json()[0],
        api.get(f"/v2/messages/{message_id}").json(),
    ]
    assert [{"body", "bodyBase64"} & set(view) for view in views] == [set(), set(), set()]
    api.post("/v2/schedules/http://example.com/x", headers=cron, content=b"x")
    assert api.get("/v2/schedules/bodiless").json()["body"] == "x"
