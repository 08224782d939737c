"""Job.enqueue_to_group: a URL group's fan-out answers every endpoint's message id, against
the dev server; enqueue / enqueue_many / schedule_at refuse ``url_group=`` (they answer one
id per payload), and the stub queue refuses a group it cannot fan out to."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from marshmallow import Schema, ValidationError, fields

from app.devserver import DevServer
from app.jobs import Job
from app.qstash.client import QStash
from app.testing import StubQueue
from tests.devserver.endpoint import Endpoint


class Ping(Schema):
    n = fields.Integer(required=True)


JOB = Job(name="fan-out", handler=lambda payload, delivery: None, schema=Ping(), retries=7)
UNUSED = "http://unused.example"


@pytest.fixture
def qstash(dev_server: DevServer) -> Iterator[QStash]:
    client = QStash(dev_server.token, base_url=dev_server.url)
    yield client
    client.close()


def test_every_endpoint_message_id_comes_back(qstash: QStash, endpoint: Endpoint) -> None:
    """Three endpoints, three ids, each the id one endpoint was delivered with; the job's
    defaults (retries) apply to every copy."""
    paths = ["/t/a", "/t/b", "/t/c"]
    qstash.upsert_endpoints("tg", [endpoint.url(path) for path in paths])
    ids = JOB.enqueue_to_group("tg", {"n": 1}, client=qstash, app_url=UNUSED)
    assert len(set(ids)) == 3
    delivered = [endpoint.wait_for(path, 1)[0] for path in paths]
    assert ids == [got.headers["Upstash-Message-Id"] for got in delivered]
    later = JOB.enqueue_to_group("tg", {"n": 2}, client=qstash, app_url=UNUSED, delay="1d")
    shown = [qstash.get_message(message_id) for message_id in later]
    assert [(m["url"], m["topicName"], m["maxRetries"]) for m in shown] == [
        (endpoint.url(path), "tg", 7) for path in paths
    ]


def test_the_payload_is_validated_before_any_publish(qstash: QStash, endpoint: Endpoint) -> None:
    """The job's schema refuses the payload: nothing reaches the group."""
    qstash.upsert_endpoints("tv", [endpoint.url("/t/v")])
    with pytest.raises(ValidationError):
        JOB.enqueue_to_group("tv", {"n": "many"}, client=qstash, app_url=UNUSED)
    with pytest.raises(ValueError, match="URL group"):
        JOB.enqueue_to_group("not a name", {"n": 1}, client=qstash, app_url=UNUSED)
    assert qstash.logs().events == []


@pytest.mark.parametrize(
    "call",
    [
        lambda **kw: JOB.enqueue({"n": 1}, **kw),
        lambda **kw: JOB.enqueue_many([{"n": 1}, {"n": 2}], **kw),
        lambda **kw: JOB.schedule_at(2_000_000_000, {"n": 1}, **kw),
        lambda **kw: JOB.enqueue_to_group("tr", {"n": 1}, **kw),
    ],
    ids=["enqueue", "enqueue_many", "schedule_at", "enqueue_to_group"],
)
def test_url_group_option_is_refused_pointing_to_enqueue_to_group(
    qstash: QStash, endpoint: Endpoint, call: Any
) -> None:
    """These answer one id per payload: a fan-out's other ids would be lost, so they refuse."""
    qstash.upsert_endpoints("tr", [endpoint.url("/t/r1"), endpoint.url("/t/r2")])
    with pytest.raises(ValueError, match=r"enqueue_to_group\(group, payload"):
        call(client=qstash, app_url=UNUSED, url_group="tr")
    assert qstash.logs().events == []


def test_the_stub_queue_refuses_a_group_instead_of_pretending(app: Flask) -> None:
    """It keeps no URL groups: it says so rather than answer one id for a fan-out."""
    queue = StubQueue.install(app)
    with app.app_context(), pytest.raises(ValueError, match="no URL groups"):
        JOB.enqueue_to_group("tg", {"n": 1})
    assert queue.messages == []
