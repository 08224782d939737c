"""URL groups: endpoints managed, publishes and batches fanned out one message per
endpoint (each retried, called back and dead-lettered on its own); through the API, our
client, Job.enqueue and both official SDKs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from qstash import QStash as OfficialQStash
from werkzeug.wrappers import Response

from app.devserver import DevServer, groups
from app.jobs import Job
from app.qstash.client import QStash
from tests.devserver.endpoint import Endpoint
from tests.devserver.js_oracle import run_oracle


def add(api: httpx.Client, group: str, *endpoints: dict[str, str]) -> httpx.Response:
    return api.post(f"/v2/topics/{group}/endpoints", json={"endpoints": list(endpoints)})


def test_publish_fans_out_one_message_per_endpoint(api: httpx.Client, endpoint: Endpoint) -> None:
    """One id per endpoint, each delivered with its own id; the group is named in its spec."""
    assert add(api, "g1", {"url": endpoint.url("/g/a"), "name": "a"}).status_code == 200
    assert add(api, "g1", {"url": endpoint.url("/g/b")}).status_code == 200
    answer = api.post("/v2/publish/g1", content=b"{}", headers={"Upstash-Delay": "1d"})
    assert answer.status_code == 201, answer.text
    results = answer.json()
    assert [r["url"] for r in results] == [endpoint.url("/g/a"), endpoint.url("/g/b")]
    first = api.get(f"/v2/messages/{results[0]['messageId']}").json()
    assert (first["topicName"], first["endpointName"]) == ("g1", "a")
    assert api.delete("/v2/messages", params={"topicName": "g1"}).json() == {"cancelled": 2}


def test_each_endpoint_retries_calls_back_and_dead_letters_alone(
    api: httpx.Client, endpoint: Endpoint
) -> None:
    """A failing endpoint goes to the DLQ alone; its failure callback names the group."""
    endpoint.replies["/g/bad"] = lambda request: Response("no", 500)
    add(api, "g2", {"url": endpoint.url("/g/good")}, {"url": endpoint.url("/g/bad"), "name": "b"})
    headers = {"Upstash-Retries": "1", "Upstash-Failure-Callback": endpoint.url("/g/failed")}
    api.post("/v2/publish/g2", content=b"x", headers=headers)
    callback = json.loads(endpoint.wait_for("/g/failed", 1)[0].body)
    assert (callback["topicName"], callback["endpointName"]) == ("g2", "b")
    assert len(endpoint.at("/g/good")) == 1 and len(endpoint.at("/g/bad")) == 2
    listed = api.get("/v2/dlq", params={"topicName": "g2"}).json()["messages"]
    assert [(m["url"], m["topicName"]) for m in listed] == [(endpoint.url("/g/bad"), "g2")]


def test_batch_and_enqueue_to_a_group(api: httpx.Client, endpoint: Endpoint) -> None:
    """A batch item naming a group answers a list; enqueue puts each copy in the queue."""
    add(api, "g3", {"url": endpoint.url("/g/x")}, {"url": endpoint.url("/g/y")})
    batch = api.post(
        "/v2/batch",
        json=[{"destination": "g3", "body": "1"}, {"destination": endpoint.url("/g/z")}],
    )
    assert batch.status_code == 201, batch.text
    first, second = batch.json()
    assert [r["url"] for r in first] == [endpoint.url("/g/x"), endpoint.url("/g/y")]
    assert "messageId" in second and "url" not in second
    api.post("/v2/queues", json={"queueName": "q-g3", "parallelism": 1, "paused": True})
    api.post("/v2/enqueue/q-g3/g3", content=b"q")
    assert api.get("/v2/queues/q-g3").json()["lag"] == 2


def test_a_deduplication_id_applies_per_endpoint(api: httpx.Client, endpoint: Endpoint) -> None:
    """The same id twice: each endpoint's copy is deduplicated, not the second endpoint's."""
    add(api, "g4", {"url": endpoint.url("/g/d1")}, {"url": endpoint.url("/g/d2")})
    headers = {"Upstash-Deduplication-Id": "once", "Upstash-Delay": "1d"}
    first = api.post("/v2/publish/g4", headers=headers).json()
    again = api.post("/v2/publish/g4", headers=headers).json()
    assert len({r["messageId"] for r in first}) == 2
    assert [r["messageId"] for r in again] == [r["messageId"] for r in first]
    assert all(r.get("deduplicated") for r in again)


def test_group_management(api: httpx.Client, endpoint: Endpoint) -> None:
    """Upsert by name or URL, list, get, remove by name or URL (last one deletes), delete."""
    add(api, "gm", {"url": endpoint.url("/1"), "name": "one"}, {"url": endpoint.url("/2")})
    add(
        api,
        "gm",
        {"url": endpoint.url("/1b"), "name": "one"},
        {"url": endpoint.url("/2"), "name": "two"},
    )
    group = api.get("/v2/topics/gm").json()
    assert group["endpoints"] == [
        {"url": endpoint.url("/1b"), "name": "one"},
        {"url": endpoint.url("/2"), "name": "two"},
    ]
    assert [g["name"] for g in api.get("/v2/topics").json()] == ["gm"]
    remove = {"endpoints": [{"name": "one"}]}
    assert api.request("DELETE", "/v2/topics/gm/endpoints", json=remove).status_code == 200
    remove = {"endpoints": [{"url": endpoint.url("/2")}]}
    assert api.request("DELETE", "/v2/topics/gm/endpoints", json=remove).status_code == 200
    assert api.get("/v2/topics/gm").status_code == 404
    add(api, "gone", {"url": endpoint.url("/3")})
    assert api.delete("/v2/topics/gone").status_code == 200
    assert api.delete("/v2/topics/gone").status_code == 404
    assert api.get("/v2/topics").json() == []


@pytest.mark.parametrize(
    ("group", "body", "status"),
    [
        ("bad name", {"endpoints": [{"url": "http://a.example"}]}, 400),
        ("g", {"endpoints": []}, 400),
        ("g", {"endpoints": [{"name": "only-a-name"}]}, 400),
        ("g", {"endpoints": [{"url": "ftp://a.example"}]}, 400),
        ("g", {"endpoints": [{"url": "http://a.example", "weight": 2}]}, 400),
        ("g", {"endpoints": [{"url": "http://a.example", "name": "a b"}]}, 400),
        ("g", {"endpoint": [{"url": "http://a.example"}]}, 400),
        ("g", [{"url": "http://a.example"}], 400),
    ],
)
def test_bad_endpoint_lists_are_refused(
    api: httpx.Client, group: str, body: Any, status: int
) -> None:
    """Every malformed body or name is a 400 saying why; nothing is created."""
    answer = api.post(f"/v2/topics/{group}/endpoints", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]
    assert api.get("/v2/topics").json() == []


def test_bounds_and_what_is_not_supported(
    api: httpx.Client, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Endpoints per group, groups, a batch's fan-out are bounded; a schedule to a group is 501."""
    monkeypatch.setattr(groups, "MAX_ENDPOINTS", 2)
    monkeypatch.setattr(groups, "MAX_GROUPS", 1)
    many = [{"url": endpoint.url(f"/b{n}")} for n in range(3)]
    assert add(api, "big", *many).status_code == 400
    assert add(api, "big", *many[:2]).status_code == 200
    assert add(api, "big", many[2]).status_code == 400
    assert add(api, "second", many[0]).status_code == 400
    monkeypatch.setattr("app.devserver.api.MAX_BATCH", 3)
    batch = api.post("/v2/batch", json=[{"destination": "big"}, {"destination": "big"}])
    assert batch.status_code == 400 and "fan out" in batch.json()["error"]
    cron = {"Upstash-Cron": "* * * * *"}
    assert api.post("/v2/schedules/big", headers=cron).status_code == 501
    assert api.post("/v2/publish/missing-group").status_code == 404
    remove = {"endpoints": [{"url": endpoint.url("/nope")}]}
    assert api.request("DELETE", "/v2/topics/big/endpoints", json=remove).status_code == 404


# -- our client and Job.enqueue --------------------------------------------------------------


def test_client_and_job_enqueue(dev_server: DevServer, endpoint: Endpoint) -> None:
    """QStash manages groups and publishes to them; Job.enqueue_to_group fans out."""
    qstash = QStash(dev_server.token, base_url=dev_server.url)
    try:
        qstash.upsert_endpoints("cg", [endpoint.url("/c/1"), (endpoint.url("/c/2"), "two")])
        group = qstash.get_url_group("cg")
        assert [(e.url, e.name) for e in group.endpoints] == [
            (endpoint.url("/c/1"), None),
            (endpoint.url("/c/2"), "two"),
        ]
        assert [g.name for g in qstash.list_url_groups()] == ["cg"]
        result = qstash.publish_json("cg", {"n": 1})
        assert [r.url for r in result.endpoints] == [endpoint.url("/c/1"), endpoint.url("/c/2")]
        job = Job(name="fan-job", handler=lambda payload, delivery: None)
        ids = job.enqueue_to_group("cg", {"n": 2}, client=qstash, app_url="http://unused")
        got = endpoint.wait_for("/c/1", 2) + endpoint.wait_for("/c/2", 2)
        assert set(ids) == {r.headers["Upstash-Message-Id"] for r in got if r.body == b'{"n":2}'}
        assert sorted(r.body for r in got) == [b'{"n":1}'] * 2 + [b'{"n":2}'] * 2
        qstash.remove_endpoints("cg", ["two"])
        assert len(qstash.get_url_group("cg").endpoints) == 1
        qstash.delete_url_group("cg")
        assert qstash.list_url_groups() == []
        with pytest.raises(ValueError):
            qstash.upsert_endpoints("cg", [])
    finally:
        qstash.close()


# -- the official SDKs ------------------------------------------------------------------------


@pytest.fixture
def sdk(dev_server: DevServer) -> Iterator[OfficialQStash]:
    yield OfficialQStash(dev_server.token, base_url=dev_server.url, retry=False)


def test_python_sdk_url_groups(sdk: OfficialQStash, endpoint: Endpoint) -> None:
    """upsert/get/list/remove/delete, publish_json and batch_json to a url_group."""
    sdk.url_group.upsert_endpoints(
        "py-group", [{"url": endpoint.url("/py/1"), "name": "one"}, {"url": endpoint.url("/py/2")}]
    )
    group = sdk.url_group.get("py-group")
    assert [(e.url, e.name) for e in group.endpoints] == [
        (endpoint.url("/py/1"), "one"),
        (endpoint.url("/py/2"), None),
    ]
    assert [g.name for g in sdk.url_group.list()] == ["py-group"]
    published = sdk.message.publish_json(url_group="py-group", body={"p": 1})
    assert [r.url for r in published] == [endpoint.url("/py/1"), endpoint.url("/py/2")]  # type: ignore[union-attr]
    batch = sdk.message.batch_json([{"url_group": "py-group", "body": {"p": 2}}])
    assert len(batch[0]) == 2  # type: ignore[arg-type]
    endpoint.wait_for("/py/1", 2)
    endpoint.wait_for("/py/2", 2)
    sdk.url_group.remove_endpoints("py-group", [{"name": "one"}])
    assert [e.url for e in sdk.url_group.get("py-group").endpoints] == [endpoint.url("/py/2")]
    sdk.url_group.delete("py-group")
    assert sdk.url_group.list() == []


@pytest.fixture(scope="module")
def js(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_oracle("groups.mjs", tmp_path_factory.mktemp("js-groups") / "qstash.db")


def test_js_sdk_url_group_lifecycle(js: dict[str, Any]) -> None:
    """addEndpoints, get, list, removeEndpoints (the last removes the group), delete."""
    assert js["lifecycle"] == {
        "endpoints": [["/g/a", "a"], ["/g/b", None]],
        "createdAt": "number",
        "listed": ["js-group"],
        "left": ["/g/b"],
        "afterLast": "rejected: 404",
        "afterDelete": 0,
        "badName": "rejected: 400",
    }


def test_js_sdk_publish_and_batch_fan_out(js: dict[str, Any]) -> None:
    """publishJSON answers one {messageId, url} per endpoint; batchJSON a list for the group
    item; every copy is delivered, verified and logged with its group and endpoint name."""
    assert js["fanOut"] == {
        "published": ["/fan/1", "/fan/2"],
        "distinctIds": 2,
        "idsDelivered": True,
        "verified": True,
        "batchShape": [2, "one"],
        "logged": ["js-fan/one", "js-fan/two"],
        "missing": "rejected: 404",
    }


def test_js_sdk_one_endpoint_dead_letters_alone(js: dict[str, Any]) -> None:
    """The failing endpoint's copy is in the DLQ (filtered by urlGroup); the other delivered."""
    assert js["deadLetter"] == {"dlq": [["/fail/dlq", "js-dlq"]], "okDelivered": 1}
