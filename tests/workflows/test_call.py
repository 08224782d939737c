"""``ctx.call``: one HTTP request per run through the SSRF-safe client, stored as a step."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from app.jobs import JobRegistry
from app.workflows import get_run, workflow
from tests.jobs.recorder import Recorder, Reply, recording_server
from tests.servers import free_port

LOOPBACK = ["127.0.0.1/32"]


@pytest.fixture
def target() -> Iterator[Recorder]:
    with recording_server() as recorder:
        yield recorder


def calling(registry: JobRegistry, url: str, **call: Any) -> Any:
    @workflow("caller", registry=registry, retries=1)
    def caller(ctx: Any, payload: Any) -> Any:
        answer = ctx.call("tell-crm", url, **call)
        ctx.sleep("then-wait", "1h")  # a replay after this must not call again
        return answer

    return caller


def test_a_call_is_made_once_and_its_answer_stored(
    make_app: Any, registry: JobRegistry, target: Recorder
) -> None:
    target.reply(Reply(201, {"crm": "ok"}, headers={"X-Trace": "t1"}))
    caller = calling(registry, f"{target.url}/hook", body={"user": 7}, headers={"X-Key": "k"})
    app, queue = make_app(WEBHOOK_ALLOWED_NETWORKS=LOOPBACK)
    with app.app_context():
        run_id = caller.start()
        queue.drain(fail_fast=True)
        run = get_run(run_id)
    assert run.state == "completed", run.error
    answer = json.loads(run.output or "")
    assert (answer["status"], json.loads(answer["body"]), answer["truncated"]) == (
        201, {"crm": "ok"}, False,
    )  # fmt: skip
    assert answer["headers"]["x-trace"] == "t1"
    (request,) = target.requests
    assert (request.path, request.json()) == ("/hook", {"user": 7})
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-key"] == "k"
    assert request.headers["accept-encoding"] == "identity"


def test_an_error_status_is_a_result_not_a_retry(
    make_app: Any, registry: JobRegistry, target: Recorder
) -> None:
    target.reply(Reply(503, {"busy": True}))
    caller = calling(registry, target.url)
    app, queue = make_app(WEBHOOK_ALLOWED_NETWORKS=LOOPBACK)
    with app.app_context():
        run_id = caller.start()
        queue.drain(fail_fast=True)
        assert json.loads(get_run(run_id).output or "")["status"] == 503
    assert len(target.requests) == 1


def test_a_long_answer_is_cut_at_the_limit(
    make_app: Any, registry: JobRegistry, target: Recorder
) -> None:
    target.reply(Reply(200, b"x" * 5000))
    caller = calling(registry, target.url)
    app, queue = make_app(WEBHOOK_ALLOWED_NETWORKS=LOOPBACK, WEBHOOK_MAX_RESPONSE_BYTES=100)
    with app.app_context():
        run_id = caller.start()
        queue.drain(fail_fast=True)
        answer = json.loads(get_run(run_id).output or "")
    assert (len(answer["body"]), answer["truncated"]) == (100, True)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:{port}/", "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:{port}/", "http://localhost:{port}/"],
)  # fmt: skip
def test_a_private_address_fails_the_run_without_retries(
    make_app: Any, registry: JobRegistry, target: Recorder, url: str
) -> None:
    port = target.url.rsplit(":", 1)[1]
    caller = calling(registry, url.format(port=port))
    app, queue = make_app()  # no WEBHOOK_ALLOWED_NETWORKS
    with app.app_context():
        run_id = caller.start()
        queue.drain()
        run = get_run(run_id)
    assert run.state == "failed" and run.failed_step == "tell-crm"
    assert "refused" in (run.error or "").lower() or "blocked" in (run.error or "").lower()
    assert queue.messages[0].statuses == [489]
    assert target.requests == []


@pytest.mark.parametrize("url", ["ftp://example.com/x", "http://", "not a url"])
def test_an_unrequestable_url_fails_the_run_clearly(
    make_app: Any, registry: JobRegistry, url: str
) -> None:
    caller = calling(registry, url)
    app, queue = make_app()
    with app.app_context():
        run_id = caller.start()
        queue.drain()
        run = get_run(run_id)
    assert run.state == "failed" and "ctx.call" in (run.error or "")
    assert queue.messages[0].statuses == [489]


def test_a_network_error_is_retried_then_fails_the_run(
    make_app: Any, registry: JobRegistry
) -> None:
    caller = calling(registry, f"http://127.0.0.1:{free_port()}/")  # nobody listens
    app, queue = make_app(WEBHOOK_ALLOWED_NETWORKS=LOOPBACK)
    with app.app_context():
        run_id = caller.start()
        queue.drain()
        run = get_run(run_id)
    assert queue.messages[0].statuses == [500, 489]  # retries=1
    assert run.state == "failed" and "ConnectError" in (run.error or "")
