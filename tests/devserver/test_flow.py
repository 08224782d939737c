"""The flow-control management API, honoured by delivery: pause holds a key's messages,
resume releases them, a pinned parallelism wins over the messages' own, resetRate empties
the window; through the API, our client and both official SDKs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from qstash import QStash as OfficialQStash
from werkzeug.wrappers import Request, Response

from app.devserver import DevServer
from app.qstash.client import FlowControl, QStash
from tests.devserver.endpoint import Endpoint
from tests.devserver.js_oracle import run_oracle


def publish(api: httpx.Client, url: str, key: str, value: str) -> None:
    headers = {"Upstash-Flow-Control-Key": key, "Upstash-Flow-Control-Value": value}
    assert api.post(f"/v2/publish/{url}", content=b"{}", headers=headers).status_code == 201


def test_pause_holds_and_resume_releases_in_order(api: httpx.Client, endpoint: Endpoint) -> None:
    """While paused nothing of the key is delivered (other keys are); resume sends all."""
    assert api.post("/v2/flowControl/k1/pause").status_code == 200
    for n in range(3):
        publish(api, endpoint.url(f"/f/held{n}"), "k1", "parallelism=1")
    publish(api, endpoint.url("/f/other"), "k2", "parallelism=1")
    endpoint.wait_for("/f/other", 1)
    info = api.get("/v2/flowControl/k1").json()
    assert (info["isPaused"], info["waitListSize"], info["parallelismMax"]) == (True, 3, 1)
    assert [r.path for r in endpoint.received] == ["/f/other"]
    assert api.post("/v2/flowControl/k1/resume").status_code == 200
    for n in range(3):
        endpoint.wait_for(f"/f/held{n}", 1)
    held = [r.path for r in endpoint.received if r.path.startswith("/f/held")]
    assert held == ["/f/held0", "/f/held1", "/f/held2"]  # parallelism 1: one after another
    assert api.get("/v2/flowControl/k1").json()["waitListSize"] == 0


def test_a_pinned_parallelism_wins_over_the_messages(api: httpx.Client, endpoint: Endpoint) -> None:
    """Messages asking parallelism=5 run one at a time while 1 is pinned."""
    running, most = 0, 0
    lock = threading.Lock()

    def slow(request: Request) -> Response:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return Response("ok")

    endpoint.replies["/f/slow"] = slow
    assert api.post("/v2/flowControl/k3/pin", params={"parallelism": "1"}).status_code == 200
    for _ in range(4):
        publish(api, endpoint.url("/f/slow"), "k3", "parallelism=5")
    endpoint.wait_for("/f/slow", 4)
    assert most == 1
    info = api.get("/v2/flowControl/k3").json()
    assert (info["isPinnedParallelism"], info["parallelismMax"]) == (True, 1)
    params = {"parallelism": "true"}
    assert api.post("/v2/flowControl/k3/unpin", params=params).status_code == 200
    assert api.get("/v2/flowControl/k3").json()["isPinnedParallelism"] is False


def test_rate_is_counted_and_reset(api: httpx.Client, endpoint: Endpoint) -> None:
    """rateCount counts starts in the window; resetRate empties it."""
    publish(api, endpoint.url("/f/rate"), "k4", "rate=5,period=1h")
    endpoint.wait_for("/f/rate", 1)
    info = api.get("/v2/flowControl/k4").json()
    assert (info["rateMax"], info["rateCount"], info["ratePeriod"]) == (5, 1, 3600)
    assert api.post("/v2/flowControl/k4/resetRate").status_code == 200
    assert api.get("/v2/flowControl/k4").json()["rateCount"] == 0
    listed = api.get("/v2/flowControl", params={"search": "k4"}).json()
    assert [item["flowControlKey"] for item in listed] == ["k4"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v2/flowControl/never-used", 404),
        ("POST", "/v2/flowControl/k/pin", 400),
        ("POST", "/v2/flowControl/k/pin?parallelism=0", 400),
        ("POST", "/v2/flowControl/k/pin?parallelism=x", 400),
        ("POST", "/v2/flowControl/k/pin?rate=1&burst=2", 400),
        ("POST", "/v2/flowControl/k/pin?period=soon", 400),
        ("POST", "/v2/flowControl/k/unpin", 400),
        ("POST", "/v2/flowControl/k/unpin?parallelism=yes", 400),
        ("POST", "/v2/flowControl/k/pause?now=1", 400),
        ("GET", "/v2/flowControl?search=a&search=b", 400),
        ("POST", "/v2/flowControl/k/stop", 404),
    ],
)
def test_bad_calls_are_refused(api: httpx.Client, method: str, path: str, status: int) -> None:
    """Unknown keys are 404; bad or unknown parameters 400, saying why."""
    answer = api.request(method, path)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]


def test_client_flow_control(dev_server: DevServer, endpoint: Endpoint) -> None:
    """Our client: pause, inspect, resume, pin, unpin, reset, list, global parallelism."""
    qstash = QStash(dev_server.token, base_url=dev_server.url)
    try:
        qstash.pause_flow_control("ck")
        qstash.publish_json(endpoint.url("/f/client"), {}, flow_control=FlowControl("ck", rate=3))
        info = qstash.flow_control("ck")
        assert (info.paused, info.wait_list_size, info.rate_max) == (True, 1, 3)
        qstash.resume_flow_control("ck")
        endpoint.wait_for("/f/client", 1)
        qstash.pin_flow_control("ck", rate=7, period=60)
        assert qstash.flow_control("ck").pinned_rate is True
        qstash.unpin_flow_control("ck", rate=True)
        qstash.reset_flow_control_rate("ck")
        assert [i.key for i in qstash.list_flow_control(search="c")] == ["ck"]
        overall = qstash.global_parallelism()
        assert overall.parallelism_max == 32 and overall.parallelism_count >= 0
        with pytest.raises(ValueError):
            qstash.pin_flow_control("ck")
    finally:
        qstash.close()


@pytest.fixture
def sdk(dev_server: DevServer) -> Iterator[OfficialQStash]:
    yield OfficialQStash(dev_server.token, base_url=dev_server.url, retry=False)


def test_python_sdk_flow_control(sdk: OfficialQStash, endpoint: Endpoint) -> None:
    """get, pause, resume, pin, unpin, reset_rate and get_global_parallelism."""
    from qstash.message import FlowControl

    sdk.flow_control.pause("py-key")
    sdk.message.publish_json(
        url=endpoint.url("/f/py"), body={}, flow_control=FlowControl(key="py-key", parallelism=2)
    )
    info = sdk.flow_control.get("py-key")
    assert (info.is_paused, info.wait_list_size, info.parallelism_max) == (True, 1, 2)
    sdk.flow_control.resume("py-key")
    endpoint.wait_for("/f/py", 1)
    sdk.flow_control.pin("py-key", {"parallelism": 3})
    assert sdk.flow_control.get("py-key").is_pinned_parallelism is True
    sdk.flow_control.unpin("py-key", {"parallelism": True})
    sdk.flow_control.reset_rate("py-key")
    assert sdk.flow_control.get("py-key").is_pinned_parallelism is False
    overall = sdk.flow_control.get_global_parallelism()
    assert overall.parallelism_max == 32


@pytest.fixture(scope="module")
def js(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_oracle("flow.mjs", tmp_path_factory.mktemp("js-flow") / "qstash.db")


def test_js_sdk_pause_holds_and_resume_releases(js: dict[str, Any]) -> None:
    """flowControl.pause: nothing delivered, two on the waitlist; resume delivers both."""
    assert js["pauseResume"] == {
        "isPaused": True,
        "waitListSize": 2,
        "parallelismMax": 1,
        "deliveredWhilePaused": 0,
        "afterResume": False,
    }


def test_js_sdk_pin_unpin_reset(js: dict[str, Any]) -> None:
    """pin shows in get, unpin removes it, resetRate zeroes the count, an empty pin is 400."""
    assert js["pin"] == {
        "pinned": [True, True, 5, 10, 60],
        "unpinned": [False, False],
        "rateCountAfterReset": 0,
        "emptyPin": "rejected: 400",
    }


def test_js_sdk_global_parallelism_and_unknown_key(js: dict[str, Any]) -> None:
    """getGlobalParallelism answers the server's concurrency; an unknown key is 404."""
    assert js["global"] == {"max": 32, "count": "number"}
    assert js["unknown"] == "rejected: 404"
