"""Deliveries: signed like QStash, retried, dead-lettered, delayed, deduplicated, gated."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from werkzeug.wrappers import Request, Response

from app.devserver import DevServer
from app.qstash.errors import SignatureError
from app.qstash.signature import verify
from tests.devserver.conftest import TIME_SCALE
from tests.devserver.endpoint import Endpoint
from tests.servers import free_port


def publish(api: httpx.Client, url: str, body: bytes = b"{}", **headers: str) -> str:
    """Publish ``body`` to ``url``; return the message id."""
    response = api.post(f"/v2/publish/{url}", content=body, headers=headers)
    assert response.status_code in (201, 202), response.text
    message_id: str = response.json()["messageId"]
    return message_id


def assert_waited(actual: float, expected: float) -> None:
    """Assert a wait was ``expected`` seconds: never early, late by less than a loaded
    machine's scheduling noise (far less than the next backoff step)."""
    assert expected - 0.015 <= actual <= expected + 0.4, (actual, expected)


def status(code: int, **headers: str) -> object:
    """Return a scripted reply answering ``code`` with ``headers``."""
    return lambda request: Response("nope", code, headers=headers)


def test_delivery_is_signed_for_the_destination(
    api: httpx.Client, endpoint: Endpoint, dev_server: DevServer
) -> None:
    """The delivery verifies with the current key, sub = destination URL, body hash of the body."""
    url = endpoint.url("/jobs/a?x=1&y=%20")
    body = json.dumps({"ünï": "cödé"}).encode()
    message_id = publish(api, url, body, **{"Content-Type": "application/json"})
    got = endpoint.wait_for("/jobs/a", 1)[0]
    claims = verify(
        got.headers["Upstash-Signature"], got.body, url=url, keys=[dev_server.current_key]
    )
    assert claims["iss"] == "Upstash" and claims["exp"] - claims["iat"] == 300
    assert got.body == body
    assert got.headers["Upstash-Message-Id"] == message_id
    assert got.headers["Upstash-Retried"] == "0"
    assert got.headers["User-Agent"] == "Upstash-QStash"
    assert got.headers["Content-Type"] == "application/json"


def test_destination_is_kept_exactly(
    api: httpx.Client, endpoint: Endpoint, dev_server: DevServer
) -> None:
    """A trailing slash and an encoded query survive into the delivery and its ``sub``."""
    url = endpoint.url("/exact/?q=a%2Fb&empty=")
    publish(api, url)
    got = endpoint.wait_for("/exact/", 1)[0]
    claims = verify(
        got.headers["Upstash-Signature"], got.body, url=url, keys=[dev_server.current_key]
    )
    assert claims["sub"] == url


def test_forwarded_headers_and_method(api: httpx.Client, endpoint: Endpoint) -> None:
    """Upstash-Forward-X arrives as X, and Upstash-Method picks the method."""
    publish(api, endpoint.url("/f"), **{"Upstash-Forward-X-Tenant": "t9", "Upstash-Method": "PUT"})
    got = endpoint.wait_for("/f", 1)[0]
    assert got.headers["X-Tenant"] == "t9"
    assert not any(name.lower().startswith("upstash-forward") for name in got.headers)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Content-Length", "7"),
        ("Transfer-Encoding", "chunked"),
        ("Host", "elsewhere.example"),
        ("Connection", "close"),
        ("Keep-Alive", "timeout=1"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Sum"),
        ("Upgrade", "websocket"),
    ],
)
def test_framing_and_hop_by_hop_headers_are_never_forwarded(
    api: httpx.Client, endpoint: Endpoint, dev_server: DevServer, name: str, value: str
) -> None:
    """Upstash-Forward-Content-Length: 7 (a publisher forwarding its own request's headers,
    as the Workflow SDK does) must not frame an 8-byte body: the endpoint verifies the
    signature over what it read, at the URL it was called on, and the header is not sent."""
    verdicts: list[str] = []

    def verifying(request: Request) -> Response:
        try:
            verify(
                request.headers["Upstash-Signature"],
                request.get_data(),
                url=request.url,
                keys=[dev_server.current_key],
            )
        except SignatureError as exc:
            verdicts.append(f"refused: {exc}")
            return Response("bad signature", 401)
        verdicts.append("verified")
        return Response("ok")

    endpoint.replies["/framed"] = verifying
    body = b'{"n": 1}'
    headers = {f"Upstash-Forward-{name}": value, "Upstash-Retries": "0"}
    publish(api, endpoint.url("/framed"), body, **headers)
    got = endpoint.wait_for("/framed", 1, timeout=5)[0]
    assert (verdicts, got.body) == (["verified"], body)
    assert value not in [v for k, v in got.headers.items() if k.lower() == name.lower()]


def test_retries_count_up_until_success(api: httpx.Client, endpoint: Endpoint) -> None:
    """Two failures then success: three attempts with Upstash-Retried 0, 1, 2."""
    answers = iter([500, 502, 200])
    endpoint.replies["/flaky"] = lambda request: Response("x", next(answers))
    publish(api, endpoint.url("/flaky"))
    got = endpoint.wait_for("/flaky", 3)
    assert [r.headers["Upstash-Retried"] for r in got] == ["0", "1", "2"]
    assert len({r.headers["Upstash-Message-Id"] for r in got}) == 1


def test_default_backoff_spacing(api: httpx.Client, endpoint: Endpoint) -> None:
    """The first retry waits QStash's e^2.5 ≈ 12.2 s (scaled by the time scale)."""
    endpoint.replies["/fail"] = status(500)
    publish(api, endpoint.url("/fail"), **{"Upstash-Retries": "1"})
    first, second = endpoint.wait_for("/fail", 2)
    assert_waited(second.at - first.at, 12.18 * TIME_SCALE)


def test_retry_delay_expression_spacing(api: httpx.Client, endpoint: Endpoint) -> None:
    """Upstash-Retry-Delay replaces the backoff: 40 s then 80 s (scaled)."""
    endpoint.replies["/expr"] = status(500)
    publish(
        api,
        endpoint.url("/expr"),
        **{"Upstash-Retries": "2", "Upstash-Retry-Delay": "pow(2, retried) * 40000"},
    )
    a, b, c = endpoint.wait_for("/expr", 3)
    assert_waited(b.at - a.at, 0.4)
    assert_waited(c.at - b.at, 0.8)


def test_retry_after_is_honoured(api: httpx.Client, endpoint: Endpoint) -> None:
    """A Retry-After of 90 s replaces the 12 s default backoff."""
    endpoint.replies["/busy"] = status(503, **{"Retry-After": "90"})
    publish(api, endpoint.url("/busy"), **{"Upstash-Retries": "1"})
    first, second = endpoint.wait_for("/busy", 2)
    assert_waited(second.at - first.at, 90 * TIME_SCALE)


def test_non_retryable_489_goes_to_dlq_with_failure_callback(
    api: httpx.Client, endpoint: Endpoint
) -> None:
    """489 + Upstash-NonRetryable-Error: one attempt, a DLQ entry, one failure callback."""
    endpoint.replies["/bad"] = status(489, **{"Upstash-NonRetryable-Error": "true"})
    message_id = publish(
        api,
        endpoint.url("/bad"),
        b'{"a":1}',
        **{"Upstash-Failure-Callback": endpoint.url("/failed")},
    )
    callback = json.loads(endpoint.wait_for("/failed", 1)[0].body)
    assert len(endpoint.at("/bad")) == 1
    dlq = api.get("/v2/dlq").json()["messages"]
    assert [(m["messageId"], m["responseStatus"]) for m in dlq] == [(message_id, 489)]
    assert callback["dlqId"] == dlq[0]["dlqId"]
    assert (callback["status"], callback["sourceMessageId"]) == (489, message_id)
    assert base64.b64decode(callback["sourceBody"]) == b'{"a":1}'
    assert base64.b64decode(callback["body"]) == b"nope"


def test_dlq_list_filters(api: httpx.Client, endpoint: Endpoint) -> None:
    """GET /v2/dlq filters by url and messageId like QStash's list."""
    endpoint.replies["/x1"] = endpoint.replies["/x2"] = status(
        489, **{"Upstash-NonRetryable-Error": "true"}
    )
    first = publish(api, endpoint.url("/x1"))
    publish(api, endpoint.url("/x2"))
    deadline = time.monotonic() + 5
    while len(api.get("/v2/dlq").json()["messages"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    by_url = api.get("/v2/dlq", params={"url": endpoint.url("/x2")}).json()["messages"]
    by_id = api.get("/v2/dlq", params={"messageId": first}).json()["messages"]
    assert [m["url"] for m in by_url] == [endpoint.url("/x2")]
    assert [m["messageId"] for m in by_id] == [first]


def test_489_without_the_header_is_retried(api: httpx.Client, endpoint: Endpoint) -> None:
    """A 489 without Upstash-NonRetryable-Error is an ordinary failure."""
    endpoint.replies["/489"] = status(489)
    publish(api, endpoint.url("/489"), **{"Upstash-Retries": "1"})
    assert len(endpoint.wait_for("/489", 2)) == 2


def test_exhausted_retries_go_to_dlq(api: httpx.Client, endpoint: Endpoint) -> None:
    """After Upstash-Retries failed retries the message is in the DLQ and can be retried from it."""
    endpoint.replies["/down"] = status(500)
    publish(api, endpoint.url("/down"), **{"Upstash-Retries": "0"})
    endpoint.wait_for("/down", 1)
    deadline = time.monotonic() + 5
    while not (dlq := api.get("/v2/dlq").json()["messages"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    endpoint.replies["/down"] = status(200)
    retried = api.post(f"/v2/dlq/retry/{dlq[0]['dlqId']}").json()["messageId"]
    assert endpoint.wait_for("/down", 2)[1].headers["Upstash-Message-Id"] == retried
    assert api.get("/v2/dlq").json()["messages"] == []


def test_callback_after_each_attempt(api: httpx.Client, endpoint: Endpoint) -> None:
    """Upstash-Callback gets one signed message per attempt with QStash's documented body."""
    answers = iter([500, 200])
    endpoint.replies["/cb-src"] = lambda request: Response('{"done":true}', next(answers))
    message_id = publish(
        api, endpoint.url("/cb-src"), b"payload", **{"Upstash-Callback": endpoint.url("/cb")}
    )
    bodies = [json.loads(r.body) for r in endpoint.wait_for("/cb", 2)]
    assert sorted((b["status"], b["retried"]) for b in bodies) == [(200, 1), (500, 0)]
    final = next(b for b in bodies if b["status"] == 200)
    assert base64.b64decode(final["body"]) == b'{"done":true}'
    assert final["sourceMessageId"] == message_id
    assert final["url"] == endpoint.url("/cb-src") and final["maxRetries"] == 3
    assert {"header", "sourceHeader", "createdAt", "notBefore", "callerIP", "method"} <= set(final)


def test_timeout_aborts_the_attempt(api: httpx.Client, endpoint: Endpoint) -> None:
    """An endpoint slower than Upstash-Timeout fails the attempt, which is retried."""
    release = threading.Event()

    def slow(request: Request) -> Response:
        release.wait(3)
        return Response("late")

    endpoint.replies["/slow"] = slow
    started = time.monotonic()
    publish(api, endpoint.url("/slow"), **{"Upstash-Timeout": "1s", "Upstash-Retries": "0"})
    dlq: list[dict[str, object]] = []
    while not dlq and time.monotonic() - started < 8:
        dlq = api.get("/v2/dlq").json()["messages"]
        time.sleep(0.05)
    release.set()
    assert dlq and dlq[0]["responseStatus"] == 0
    assert time.monotonic() - started < 2


def test_a_refused_connection_is_reported_as_refused(
    api: httpx.Client, dev_server: DevServer
) -> None:
    """Nothing listening: the DLQ entry and the attempt line say the connection was refused,
    not "timeout after 7200s" (urllib3 files a refused connection under its timeouts)."""
    lines: list[str] = []
    dev_server.on_attempt(lambda event: lines.append(event.line()))
    url = f"http://127.0.0.1:{free_port()}/nobody"
    publish(api, url, **{"Upstash-Retries": "0"})
    deadline = time.monotonic() + 5
    while not (dlq := api.get("/v2/dlq").json()["messages"]) or not lines:
        assert time.monotonic() < deadline, "the attempt never finished"
        time.sleep(0.02)
    reported = [dlq[0]["responseBody"], lines[0]]
    assert dlq[0]["responseStatus"] == 0
    assert all("refused" in text.lower() and "timeout" not in text for text in reported), reported


def test_delay_and_not_before(api: httpx.Client, endpoint: Endpoint) -> None:
    """Upstash-Delay and Upstash-Not-Before postpone the first attempt (scaled)."""
    start = time.time()
    publish(api, endpoint.url("/delayed"), **{"Upstash-Delay": "30s"})
    publish(api, endpoint.url("/nb"), **{"Upstash-Not-Before": str(int(start) + 60)})
    delayed = endpoint.wait_for("/delayed", 1)[0].at - start
    not_before = endpoint.wait_for("/nb", 1)[0].at - start
    assert_waited(delayed, 30 * TIME_SCALE)
    assert (int(start) + 60 - start) * TIME_SCALE - 0.02 <= not_before <= 0.65


def test_deduplication_by_id_and_content(api: httpx.Client, endpoint: Endpoint) -> None:
    """Same dedup id or same content within the window: one message, the first id."""
    url = endpoint.url("/dedup")
    first = api.post(f"/v2/publish/{url}", headers={"Upstash-Deduplication-Id": "k"})
    again = api.post(f"/v2/publish/{url}", headers={"Upstash-Deduplication-Id": "k"}, content=b"x")
    assert again.json() == {"messageId": first.json()["messageId"], "deduplicated": True}
    content = {"Upstash-Content-Based-Deduplication": "true"}
    a = api.post(f"/v2/publish/{url}", headers=content, content=b"same").json()
    b = api.post(f"/v2/publish/{url}", headers=content, content=b"same").json()
    c = api.post(f"/v2/publish/{url}", headers=content, content=b"other").json()
    assert b == {"messageId": a["messageId"], "deduplicated": True}
    assert "deduplicated" not in c
    endpoint.wait_for("/dedup", 3)
    time.sleep(0.1)
    assert len(endpoint.at("/dedup")) == 3


def test_dedup_window_expires(endpoint: Endpoint) -> None:
    """After the 10-minute window (scaled ×0.001: 0.6 s) the same dedup id is a new message."""
    url = endpoint.url("/window")
    headers = {"Upstash-Deduplication-Id": "w"}
    with DevServer(time_scale=0.001).running(port=0) as server:
        client = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}
        )
        first = client.post(f"/v2/publish/{url}", headers=headers).json()["messageId"]
        time.sleep(0.4)
        assert client.post(f"/v2/publish/{url}", headers=headers).json()["messageId"] == first
        time.sleep(0.3)
        assert client.post(f"/v2/publish/{url}", headers=headers).json()["messageId"] != first
        client.close()


def in_flight_tracker() -> tuple[Callable[[Request], Response], list[int]]:
    """Return an endpoint reply that takes 30 ms, and a cell holding the peak in flight."""
    active, peak = [0], [0]
    lock = threading.Lock()

    def tracked(request: Request) -> Response:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.03)
        with lock:
            active[0] -= 1
        return Response("ok")

    return tracked, peak


def test_queue_parallelism_one_is_sequential(api: httpx.Client, endpoint: Endpoint) -> None:
    """A queue with parallelism 1 delivers one message at a time, in order."""
    tracked, overlaps = in_flight_tracker()
    endpoint.replies["/q"] = tracked
    ids = [
        api.post(f"/v2/enqueue/serial/{endpoint.url('/q')}", content=str(i)).json()["messageId"]
        for i in range(6)
    ]
    got = endpoint.wait_for("/q", 6)
    assert overlaps[0] == 1
    assert [r.headers["Upstash-Message-Id"] for r in got] == ids


def test_paused_queue_holds_messages(api: httpx.Client, endpoint: Endpoint) -> None:
    """Nothing is delivered from a paused queue until it is resumed."""
    api.post("/v2/queues", json={"queueName": "held", "parallelism": 2, "paused": True})
    api.post(f"/v2/enqueue/held/{endpoint.url('/held')}")
    time.sleep(0.3)
    assert endpoint.at("/held") == []
    api.post("/v2/queues/held/resume")
    endpoint.wait_for("/held", 1)


def test_flow_control_rate(api: httpx.Client, endpoint: Endpoint) -> None:
    """Flow control rate=2 per 10 s (scaled 0.1 s) spreads 6 messages over ≥ 0.2 s."""
    headers = {"Upstash-Flow-Control-Key": "k", "Upstash-Flow-Control-Value": "rate=2, period=10s"}
    for _ in range(6):
        publish(api, endpoint.url("/rate"), **headers)
    got = endpoint.wait_for("/rate", 6)
    starts = sorted(r.at for r in got)
    # Unlimited, all six arrive within a few ms. Limited, at most two start per period:
    # the 5th starts two periods after the 1st's period began, so at least one whole
    # period after the 1st however late that one ran (a loaded machine delays it).
    assert starts[4] - starts[0] >= 0.09
    assert starts[2] > starts[0]


def test_slow_endpoint_does_not_stall_others(tmp_path: object, endpoint: Endpoint) -> None:
    """With all of one endpoint's slots busy, another endpoint is still delivered at once."""
    release = threading.Event()

    def stuck(request: Request) -> Response:
        release.wait(5)
        return Response("ok")

    endpoint.replies["/stuck"] = stuck
    with DevServer(concurrency=4, time_scale=TIME_SCALE).running(port=0) as server:
        client = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}
        )
        for _ in range(10):
            publish(client, endpoint.url("/stuck"))
        time.sleep(0.1)
        started = time.monotonic()
        publish(client, endpoint.url("/fast"))
        endpoint.wait_for("/fast", 1, timeout=2)
        assert time.monotonic() - started < 0.5
        release.set()
        client.close()


def test_schedule_fires_with_its_id(api: httpx.Client, endpoint: Endpoint) -> None:
    """Each firing of a schedule is a delivery carrying Upstash-Schedule-Id."""
    response = api.post(
        f"/v2/schedules/{endpoint.url('/cron')}",
        headers={"Upstash-Cron": "CRON_TZ=Europe/Paris * * * * *"},
        content=b"tick",
    )
    schedule_id = response.json()["scheduleId"]
    got = endpoint.wait_for("/cron", 1, timeout=3)[0]
    assert got.headers["Upstash-Schedule-Id"] == schedule_id
    assert got.body == b"tick"
    assert api.get(f"/v2/schedules/{schedule_id}").json()["lastScheduleTime"] > 0


def test_paused_schedule_does_not_fire(api: httpx.Client, endpoint: Endpoint) -> None:
    """A paused schedule stays silent."""
    schedule_id = api.post(
        f"/v2/schedules/{endpoint.url('/quiet')}", headers={"Upstash-Cron": "* * * * *"}
    ).json()["scheduleId"]
    api.patch(f"/v2/schedules/{schedule_id}/pause")
    time.sleep(0.8)
    assert endpoint.at("/quiet") == []
    assert api.get(f"/v2/schedules/{schedule_id}").json()["isPaused"] is True


def test_flow_control_parallelism(api: httpx.Client, endpoint: Endpoint) -> None:
    """Flow control parallelism=2 never has more than two deliveries of its key in flight."""
    tracked, peak = in_flight_tracker()
    endpoint.replies["/fc"] = tracked
    headers = {
        "Upstash-Flow-Control-Key": "tenant-1",
        "Upstash-Flow-Control-Value": "parallelism=2",
    }
    for _ in range(8):
        publish(api, endpoint.url("/fc"), **headers)
    endpoint.wait_for("/fc", 8)
    assert peak[0] == 2


def test_callback_options_are_applied(api: httpx.Client, endpoint: Endpoint) -> None:
    """Upstash-Callback-Method and -Forward-* shape the callback delivery."""
    publish(
        api,
        endpoint.url("/src"),
        **{
            "Upstash-Callback": endpoint.url("/cb-put"),
            "Upstash-Callback-Method": "PUT",
            "Upstash-Callback-Forward-X-Secret": "s3",
        },
    )
    got = endpoint.wait_for("/cb-put", 1)[0]
    assert got.headers["X-Secret"] == "s3"
    assert json.loads(got.body)["status"] == 200
