"""Hostile input to every dev-server endpoint that reads a body or headers: 4xx, never 500.

Most tests call the API's WSGI app in-process (no socket): Hypothesis sends hundreds of
requests per test. A few go over the wire to show the server itself answers the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from app.devserver import DevServer
from app.devserver.api import MAX_BATCH
from app.devserver.json_input import MAX_DEPTH

FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

#: Every field name the API reads from a JSON body, so trees hit real fields too.
FIELDS = [
    "destination",
    "headers",
    "body",
    "queue",
    "queueName",
    "parallelism",
    "paused",
    "messageIds",
    "dlqIds",
]
UPSTASH_HEADERS = [
    "Upstash-Method",
    "Upstash-Retries",
    "Upstash-Retry-Delay",
    "Upstash-Delay",
    "Upstash-Not-Before",
    "Upstash-Timeout",
    "Upstash-Callback",
    "Upstash-Failure-Callback",
    "Upstash-Deduplication-Id",
    "Upstash-Content-Based-Deduplication",
    "Upstash-Flow-Control-Key",
    "Upstash-Flow-Control-Value",
    "Upstash-Label",
    "Upstash-Queue-Name",
    "Upstash-Cron",
    "Upstash-Schedule-Id",
    "Upstash-Forward-X-Trace",
    "Upstash-Callback-X-Trace",
    "Content-Type",
]

#: Any code point, lone surrogates included (JSON escapes them as \\udxxx).
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**70)
    | st.floats()
    | any_text
)
json_trees = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | any_text, children, max_size=4)
    ),
    max_leaves=16,
)
hosts = st.sampled_from(["example.com", "127.0.0.1", "[::1]", "exa mple.com", "", "é.com"])
urls = st.builds(
    "{}://{}{}".format,
    st.sampled_from(["http", "https", "ftp", "javascript", ""]),
    hosts,
    st.sampled_from(["", "/", "/p?q=1", "/\x00", "/\r\nX: y"]) | any_text,
)
#: Destinations the API accepts, so that whole batches get through to the later checks.
good_urls = st.builds("http://example.com/{}".format, st.text("abc/?=&%", max_size=8))
header_names = st.sampled_from(UPSTASH_HEADERS) | any_text
#: What an HTTP server hands the app: Latin-1 text without line breaks.
wire_text = st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=30)
#: Crons built from real and broken fields, so schedules get past the cron check too.
crons = st.builds(
    " ".join,
    st.lists(
        st.sampled_from(["*", "0", "*/5", "1-3", "L", "5#5", "61", "*/0", "x"]),
        min_size=5,
        max_size=5,
    ),
)
header_values = (
    st.sampled_from(["", "0", "1", "²", "³", "1e3", "9" * 40, "-1", "1s", "1d", "30000d"])
    | crons
    | wire_text
)

batch_items = st.fixed_dictionaries(
    {"destination": good_urls | urls | json_trees},
    optional={
        "headers": st.dictionaries(header_names, header_values | json_trees, max_size=3)
        | json_trees,
        "body": any_text | json_trees,
        "queue": st.sampled_from(["q", "a/b", ""]) | json_trees,
    },
)
queue_bodies = st.fixed_dictionaries(
    {},
    optional={
        "queueName": st.sampled_from(["q", "", "a/b", "x" * 200]) | json_trees,
        "parallelism": st.integers() | json_trees,
        "paused": st.booleans() | json_trees,
    },
)
id_bodies = st.fixed_dictionaries(
    {}, optional={"messageIds": st.lists(any_text) | json_trees, "dlqIds": st.lists(any_text)}
)


def deep(depth: int) -> bytes:
    """Return a JSON array nested ``depth`` levels deep."""
    return b"[" * depth + b"]" * depth


def encode(tree: Any, ascii_only: bool) -> bytes:
    """Serialise ``tree`` as JSON; with non-ASCII kept, lone surrogates become bad UTF-8."""
    return json.dumps(tree, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


raw_bodies = (
    st.builds(encode, json_trees | st.lists(batch_items, max_size=3), st.booleans())
    | st.builds(deep, st.integers(min_value=1, max_value=50_000))
    | st.binary(max_size=64)
    | st.sampled_from([b"NaN", b"[Infinity]", b"\xef\xbb\xbf[]", b"1" * 5000, b'"\\ud800"'])
)

#: Every route that reads a JSON body (method, path).
JSON_ROUTES = [
    ("POST", "/v2/batch"),
    ("POST", "/v2/queues"),
    ("DELETE", "/v2/messages"),
    ("DELETE", "/v2/dlq"),
    ("POST", "/v2/dlq/retry"),
]
#: Every route that turns headers and a body into a message (method, path).
PUBLISH_ROUTES = [
    ("POST", "/v2/publish/http://example.com/x"),
    ("POST", "/v2/enqueue/q/http://example.com/x"),
    ("POST", "/v2/schedules/http://example.com/x"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    # Not started: requests go straight to the WSGI app, deliveries never leave memory.
    server = DevServer(db=tmp_path_factory.mktemp("dev") / "qstash.db")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(server: DevServer) -> Client:
    return Client(server.api)


def call(
    client: Client,
    server: DevServer,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """Send one request to the API in-process; return its status and JSON answer."""
    sent = {"Authorization": f"Bearer {server.token}", **(headers or {})}
    response = client.open(path, method=method, data=body, headers=sent)
    return response.status_code, json.loads(response.get_data())


#: RFC 9110 §5.1 and §5.5: a field name is a token; a value is visible text, SP and HTAB.
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def assert_deliverable(server: DevServer, answer: Any) -> None:
    """Assert the messages an answer names can be sent as accepted: RFC 9110 header fields."""
    answers = answer if isinstance(answer, list) else [answer]
    ids = [item["messageId"] for item in answers if isinstance(item, dict) and "messageId" in item]
    for message_id in ids:
        message = server.store.load(message_id)
        assert message is not None
        for name, value in server.dispatcher._headers(message).items():
            assert TOKEN.fullmatch(name), name
            assert FIELD_VALUE.fullmatch(value), value


def assert_clear_answer(status: int, answer: Any) -> None:
    """Assert a 2xx, or a 4xx with QStash's ``{"error": text}``: never a server error."""
    assert status < 500, answer
    if status >= 400:
        assert isinstance(answer, dict) and isinstance(answer.get("error"), str), answer


@FAST
@given(route=st.sampled_from(JSON_ROUTES), body=raw_bodies)
def test_any_json_body_gets_a_clear_answer(
    client: Client, server: DevServer, route: tuple[str, str], body: bytes
) -> None:
    """Trees, deep nesting, bad UTF-8, NaN, huge numbers: a 2xx or a 4xx, never a 500."""
    status, answer = call(client, server, *route, body)
    assert_clear_answer(status, answer)
    assert_deliverable(server, answer)


@FAST
@given(
    headers=st.dictionaries(
        st.sampled_from(["X-Trace", "Upstash-Forward-X"]) | any_text,
        wire_text | any_text | json_trees,
        min_size=1,
        max_size=3,
    )
)
def test_batch_headers_are_accepted_only_when_deliverable(
    client: Client, server: DevServer, headers: dict[str, Any]
) -> None:
    """A batch item's headers of any name and value: each is an HTTP field, or a 400."""
    item = {"destination": "http://example.com/h", "headers": headers, "body": "{}"}
    status, answer = call(client, server, "POST", "/v2/batch", json.dumps([item]).encode())
    assert_clear_answer(status, answer)
    assert_deliverable(server, answer)


@settings(FAST, max_examples=300)
@given(items=st.lists(batch_items, min_size=1, max_size=3))
def test_any_batch_gets_a_clear_answer(
    client: Client, server: DevServer, items: list[dict[str, Any]]
) -> None:
    """Batch items of every shape: accepted only when each one is deliverable as sent."""
    status, answer = call(client, server, "POST", "/v2/batch", json.dumps(items).encode())
    assert_clear_answer(status, answer)
    assert_deliverable(server, answer)


@FAST
@given(body=queue_bodies | id_bodies)
def test_any_queue_or_id_list_gets_a_clear_answer(
    client: Client, server: DevServer, body: dict[str, Any]
) -> None:
    """Queue upserts and id lists with every type in every field: 2xx or 4xx."""
    raw = json.dumps(body).encode()
    for route in JSON_ROUTES[1:]:
        assert_clear_answer(*call(client, server, *route, raw))


@settings(FAST, max_examples=400)
@given(
    route=st.sampled_from(PUBLISH_ROUTES),
    headers=st.dictionaries(
        st.sampled_from(UPSTASH_HEADERS), header_values, min_size=1, max_size=4
    ),
    body=st.binary(max_size=32),
)
def test_any_publish_headers_get_a_clear_answer(
    client: Client,
    server: DevServer,
    route: tuple[str, str],
    headers: dict[str, str],
    body: bytes,
) -> None:
    """Publish, enqueue and schedule with any Upstash-* header values: 2xx or 4xx."""
    status, answer = call(client, server, *route, body, headers)
    assert_clear_answer(status, answer)
    assert_deliverable(server, answer)


@pytest.mark.parametrize("route", JSON_ROUTES)
def test_too_deep_json_is_400_naming_the_limit(
    client: Client, server: DevServer, route: tuple[str, str]
) -> None:
    """JSON nested past the limit is refused with a message saying so, at any depth."""
    for depth in (MAX_DEPTH + 1, 100_000):
        status, answer = call(client, server, *route, deep(depth))
        assert status == 400
        assert f"more than {MAX_DEPTH} levels" in answer["error"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"\xff[]", "UTF-8"),
        (b'["\\ud800"]', "surrogate"),
        (b"[NaN]", "NaN"),
        (b"[" + b"1" * 5000 + b"]", "not valid JSON"),
        (b"[1,", "not valid JSON"),
    ],
)
def test_invalid_json_is_400_naming_the_problem(
    client: Client, server: DevServer, body: bytes, fragment: str
) -> None:
    """Bad UTF-8, lone surrogates, NaN, oversized numbers and syntax errors are named."""
    status, answer = call(client, server, "POST", "/v2/batch", body)
    assert status == 400
    assert fragment in answer["error"]


def test_json_just_under_the_depth_limit_is_read(client: Client, server: DevServer) -> None:
    """Nesting up to the limit is valid input: the field checks answer, not the parser."""
    status, answer = call(client, server, "POST", "/v2/batch", deep(MAX_DEPTH))
    assert status == 400
    assert "batch item 0" in answer["error"]


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ({"destination": "http://example.com/x", "body": 0}, "'body'"),
        ({"destination": "http://example.com/x", "body": ["a"]}, "'body'"),
        ({"destination": "http://example.com/x", "headers": {"X": {"a": 1}}}, "header X"),
        ({"destination": "http://example.com/x", "headers": {"X": 1}}, "header X"),
        ({"destination": "http://example.com/x", "headers": {"Bad Name": "v"}}, "header name"),
        ({"destination": "http://example.com/x", "headers": {"X": "a\r\nY: b"}}, "header X"),
        ({"destination": "http://example.com/x", "headers": {"X": "日本"}}, "header X"),
    ],
)
def test_wrong_batch_field_is_400_naming_item_and_field(
    client: Client, server: DevServer, item: dict[str, Any], fragment: str
) -> None:
    """A wrongly typed or undeliverable batch field is refused, naming the item and field."""
    body = json.dumps([item]).encode("utf-8", "surrogatepass")
    status, answer = call(client, server, "POST", "/v2/batch", body)
    assert status == 400, answer
    assert "batch item 0" in answer["error"] and fragment in answer["error"], answer


def test_batch_items_with_null_fields_are_accepted(client: Client, server: DevServer) -> None:
    """The official Python SDK sends ``null`` for an absent body, queue or headers."""
    item = {"destination": "http://example.com/x", "headers": None, "body": None, "queue": None}
    status, answer = call(client, server, "POST", "/v2/batch", json.dumps([item]).encode())
    assert status == 201, answer


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"Upstash-Retries": "²"}, "Upstash-Retries"),
        ({"Upstash-Not-Before": "³"}, "Upstash-Not-Before"),
        ({"Upstash-Not-Before": "9" * 40}, "Upstash-Not-Before"),
    ],
)
def test_non_ascii_or_huge_numbers_in_headers_are_400(
    client: Client, server: DevServer, headers: dict[str, str], fragment: str
) -> None:
    """Digits outside ASCII and numbers past any date are refused, not crashed on."""
    status, answer = call(client, server, "POST", PUBLISH_ROUTES[0][1], b"", headers)
    assert status == 400, answer
    assert fragment in answer["error"]


@pytest.mark.parametrize("count", ["²", "٣"])
def test_non_ascii_digits_in_count_are_400(client: Client, server: DevServer, count: str) -> None:
    """``GET /v2/dlq?count=²`` is a 400, not a crash in int()."""
    status, answer = call(client, server, "GET", f"/v2/dlq?count={count}")
    assert status == 400, answer


def test_huge_parallelism_is_400(client: Client, server: DevServer) -> None:
    """A queue parallelism past what the store can hold is refused, not a crash."""
    body = json.dumps({"queueName": "big", "parallelism": 2**63}).encode()
    status, answer = call(client, server, "POST", "/v2/queues", body)
    assert status == 400, answer
    assert "parallelism" in answer["error"]


def test_deep_batch_over_the_wire_is_400(dev_server: DevServer) -> None:
    """The reported crash: 100 000 nested arrays to /v2/batch answer 400 over HTTP."""
    response = httpx.post(
        f"{dev_server.url}/v2/batch",
        content=deep(100_000),
        headers={"Authorization": f"Bearer {dev_server.token}"},
        timeout=10,
    )
    assert response.status_code == 400
    assert "levels" in response.json()["error"]


def test_server_log_has_no_traceback_after_hostile_input(
    client: Client, server: DevServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The hostile inputs above leave nothing in the dev server's error log."""
    for route in JSON_ROUTES:
        call(client, server, *route, deep(5000))
        call(client, server, *route, b'{"messageIds": ["\\udc00"], "queueName": "\\udc00"}')
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_schedule_with_a_bad_delay_is_400(client: Client, server: DevServer) -> None:
    """A schedule's Upstash-Delay is checked like a publish's, not crashed on."""
    headers = {"Upstash-Cron": "* * * * *", "Upstash-Delay": "soon"}
    status, answer = call(client, server, "POST", PUBLISH_ROUTES[2][1], b"", headers)
    assert status == 400, answer
    assert "Upstash-Delay" in answer["error"]


@pytest.mark.parametrize("url", ["http://example.com[", "http://example.com:99999/"])
def test_unparsable_urls_are_400(client: Client, server: DevServer, url: str) -> None:
    """URLs urllib refuses to parse are a 400 as destination, in a batch and as callback."""
    answers = [
        call(client, server, "POST", f"/v2/publish/{url}"),
        call(client, server, "POST", "/v2/batch", json.dumps([{"destination": url}]).encode()),
        call(client, server, *PUBLISH_ROUTES[0], b"", {"Upstash-Callback": url}),
    ]
    for status, answer in answers:
        assert status == 400, answer
        assert url in answer["error"]


def test_batch_of_too_many_messages_is_400(client: Client, server: DevServer) -> None:
    """A batch over MAX_BATCH messages is refused before any is built."""
    items = [{"destination": "http://example.com/x"}] * (MAX_BATCH + 1)
    status, answer = call(client, server, "POST", "/v2/batch", json.dumps(items).encode())
    assert status == 400
    assert f"at most {MAX_BATCH}" in answer["error"]


def test_error_messages_are_bounded(client: Client, server: DevServer) -> None:
    """An error quoting a megabyte of input stays short."""
    body = json.dumps({"queueName": "x" * 1_000_000, "parallelism": 1}).encode()
    status, answer = call(client, server, "POST", "/v2/queues", body)
    assert status == 400
    assert len(answer["error"]) <= 500


def test_chunked_body_over_the_limit_is_413(dev_server: DevServer) -> None:
    """A chunked body (no Content-Length) is cut off at the API's limit too."""

    def chunks() -> Iterator[bytes]:
        for _ in range(11):
            yield b"[" * (1024 * 1024)

    response = httpx.post(
        f"{dev_server.url}/v2/batch",
        content=chunks(),
        headers={"Authorization": f"Bearer {dev_server.token}"},
        timeout=30,
    )
    assert response.status_code == 413
    assert "error" in response.json()
