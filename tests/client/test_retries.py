"""Safe client-side retries: backoff, Retry-After, and no duplicate after a lost answer."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import pytest

from app.qstash.client import (
    QStash,
    QStashAPIError,
    QStashConnectionError,
    QStashError,
    RateLimitError,
    json_message,
)
from app.qstash.client.transport import retry_after_seconds
from tests.client.fake_qstash import TOKEN, FakeQStash
from tests.servers import free_port

DEST = "https://jobs.example.com/api/jobs/send-email"


@pytest.fixture
def retrying(make_client: Callable[..., QStash]) -> QStash:
    """Our client with its default automatic deduplication and tiny backoff."""
    return make_client(retries=3)


def test_lost_answer_is_retried_without_duplicate(fake: FakeQStash, retrying: QStash) -> None:
    """A retry after a dropped answer re-sends the same deduplication id: one message results."""
    fake.drop_next()
    result = retrying.publish_json(DEST, {"to": "a@b.c"})
    assert len(fake.requests) == 2
    ids = {req.headers["upstash-deduplication-id"] for req in fake.requests}
    assert len(ids) == 1
    assert list(fake.state.messages) == [result.message_id]
    assert result.deduplicated


def test_lost_batch_answer_is_retried_without_duplicates(
    fake: FakeQStash, retrying: QStash
) -> None:
    """A retried batch re-sends each message's deduplication id unchanged."""
    fake.drop_next()
    results = retrying.batch([json_message(DEST, n) for n in range(3)])
    assert fake.requests[0].body == fake.requests[1].body
    assert sorted(r.message_id for r in results) == sorted(fake.state.messages)


def test_server_error_is_retried(fake: FakeQStash, retrying: QStash) -> None:
    """A 503 is retried and the publish then succeeds."""
    fake.fail_next(503, times=2)
    result = retrying.publish_json(DEST, 1)
    assert len(fake.requests) == 3
    assert result.message_id in fake.state.messages


def test_rate_limit_honours_retry_after(
    fake: FakeQStash, make_client: Callable[..., QStash]
) -> None:
    """A 429 is retried after the Retry-After it carries."""
    waits: list[float] = []
    client = make_client()
    client.http._sleep = waits.append
    fake.fail_next(429, headers={"Retry-After": "2"})
    client.publish_json(DEST, 1)
    assert waits == [2.0]


def test_long_retry_after_raises_rate_limit_error(fake: FakeQStash, retrying: QStash) -> None:
    """A 429 asking to wait longer than the client will raises RateLimitError at once."""
    fake.fail_next(429, headers={"Retry-After": "3600"}, error="daily limit reached")
    with pytest.raises(RateLimitError) as caught:
        retrying.publish_json(DEST, 1)
    assert caught.value.retry_after == 3600
    assert caught.value.status == 429
    assert len(fake.requests) == 1


def test_client_error_is_not_retried(fake: FakeQStash, retrying: QStash) -> None:
    """A 400 is QStash refusing the call: raised at once with QStash's message."""
    fake.fail_next(400, error="invalid destination url")
    with pytest.raises(QStashAPIError) as caught:
        retrying.publish_json(DEST, 1)
    assert (caught.value.status, caught.value.message) == (400, "invalid destination url")
    assert caught.value.response is not None
    assert len(fake.requests) == 1


def test_retries_give_up_with_the_last_error(fake: FakeQStash, retrying: QStash) -> None:
    """After the last retry, the server's error is raised."""
    fake.fail_next(500, times=10)
    with pytest.raises(QStashAPIError, match="500"):
        retrying.publish_json(DEST, 1)
    assert len(fake.requests) == 4


def test_unreachable_server_raises_connection_error(make_client: Callable[..., QStash]) -> None:
    """Nothing listening: a QStashConnectionError, never an httpx exception."""
    client = make_client(base_url=f"http://127.0.0.1:{free_port()}", retries=1)
    with pytest.raises(QStashConnectionError, match="no answer from QStash") as caught:
        client.publish_json(DEST, 1)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_wrong_token_is_an_api_error(fake: FakeQStash, make_client: Callable[..., QStash]) -> None:
    """A 401 names the status and is not retried."""
    client = make_client(token="wrong")
    with pytest.raises(QStashAPIError, match="401: unauthorized"):
        client.signing_keys()
    assert len(fake.requests) == 1


def test_pool_is_created_lazily_and_again_after_fork(
    fake: FakeQStash, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No connection pool exists before the first call; a forked child gets its own."""
    client = QStash(TOKEN, base_url=fake.url)
    assert client.http._client is None
    client.signing_keys()
    parent_pool = client.http.client()
    assert client.http.client() is parent_pool
    monkeypatch.setattr(os, "getpid", lambda: -1)
    assert client.http.client() is not parent_pool
    parent_pool.close()
    client.close()


NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "Thu, 01 Jan 2026 00:01:00 GMT"}, 60.0),
        ({"Burst-RateLimit-Reset": str(int(NOW) + 90)}, 90.0),
        ({"RateLimit-Reset": str(int(NOW) + 30)}, 30.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_forms(headers: dict[str, str], expected: float | None) -> None:
    """Retry-After in seconds or as an HTTP date, or a rate-limit reset, gives the wait."""
    assert retry_after_seconds(headers, now=NOW) == expected


@pytest.mark.parametrize(
    "value",
    ["Thu, 01 Jan 99999999999 00:01:40 GMT", "9" * 400, "nan", "inf", "1e999", "-5", "\u00b2"],
)
def test_hostile_retry_after_is_no_wait_and_never_raises(value: str) -> None:
    """A Retry-After that is no finite wait of 0 s to a day is ignored (None), never raised
    (a far-future date used to raise OverflowError out of the client)."""
    assert retry_after_seconds({"Retry-After": value}, now=NOW) is None
    assert retry_after_seconds({"RateLimit-Reset": value}, now=NOW) is None


@pytest.mark.parametrize("base_url", ["localhost:8080", "ftp://q.example", "", "http://"])
def test_bad_base_url_is_refused_at_construction(base_url: str) -> None:
    """A QSTASH_URL that is not an absolute http(s) URL is a ValueError naming it."""
    with pytest.raises(ValueError, match="QSTASH_URL must be an absolute http"):
        QStash(TOKEN, base_url=base_url)


def test_invalid_request_url_is_a_qstash_error(make_client: Callable[..., QStash]) -> None:
    """A URL httpx cannot send is reported as a QStashError, not an httpx exception."""
    with pytest.raises(QStashError, match="cannot call QStash"):
        make_client().http.request("GET", "/v2/\x00bad")


def test_lost_schedule_create_makes_one_schedule(fake: FakeQStash, retrying: QStash) -> None:
    """A create without an id gets one before sending, so its retry updates, not duplicates."""
    fake.drop_next()
    schedule_id = retrying.create_schedule(DEST, "0 9 * * *")
    sent = {req.headers["upstash-schedule-id"] for req in fake.requests}
    assert sent == {schedule_id}
    assert list(fake.state.schedules) == [schedule_id]


def test_retried_delete_that_finds_nothing_succeeds(fake: FakeQStash, retrying: QStash) -> None:
    """A DELETE whose answer was lost is done: the retry's 404 is not an error."""
    fake.add_schedule("s1", DEST, "0 9 * * *")
    fake.drop_next()
    retrying.delete_schedule("s1")
    assert [req.method for req in fake.requests] == ["DELETE", "DELETE"]
    assert fake.state.schedules == {}


def test_first_delete_of_a_missing_schedule_is_an_error(fake: FakeQStash, retrying: QStash) -> None:
    """Without a retry, deleting what does not exist is QStash's 404."""
    with pytest.raises(QStashAPIError, match="404"):
        retrying.delete_schedule("nope")
