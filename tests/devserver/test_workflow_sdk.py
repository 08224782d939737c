"""The official ``upstash-workflow`` SDK (Flask ``Serve``) running workflows on the dev server.

The SDK posts one message per step; the dev server, as QStash, builds each step delivery's
body from the run's history, delays a ``context.sleep`` step, delivers a ``context.call`` to
the third party and calls the workflow back with its answer.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from qstash import QStash, Receiver
from upstash_workflow.flask import Serve
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from app.devserver import DevServer
from tests.devserver.conftest import TIME_SCALE
from tests.devserver.endpoint import Endpoint
from tests.servers import serving

#: QStash seconds of the workflow's sleep: 100 s is 1 s of real time at TIME_SCALE.
SLEEP = 100


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class Trace:
    """What the workflow's step functions did, by step name, and the run's result."""

    runs: Counter[str] = field(default_factory=Counter)
    at: dict[str, float] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def ran(self, name: str) -> None:
        self.runs[name] += 1
        self.at.setdefault(name, time.monotonic())


def workflow_app(dev_server: DevServer, third_party: str, trace: Trace) -> Flask:
    """Return a Flask app serving ``/workflow``: run → sleep → call → run."""
    app = Flask(__name__)
    serve = Serve(app)

    @serve.route(
        "/workflow",
        qstash_client=QStash(dev_server.token, base_url=dev_server.url, retry=False),
        receiver=Receiver(
            current_signing_key=dev_server.current_key, next_signing_key=dev_server.next_key
        ),
    )
    def workflow(context: Any) -> None:
        def first() -> int:
            trace.ran("first")
            trace.run_ids.append(context.workflow_run_id)
            return int(context.request_payload["n"]) + 1

        number = context.run("first", first)
        context.sleep("pause", SLEEP)
        answer = context.call("third", url=third_party, method="POST", body={"number": number})

        def last() -> dict[str, Any]:
            trace.ran("last")
            return {"number": number, "status": answer.status, "doubled": answer.body["doubled"]}

        result = context.run("last", last)
        trace.result = result
        trace.done.set()

    return app


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve a WSGI ``app`` on a free loopback port; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
    with serving(server):
        yield f"http://127.0.0.1:{server.port}"


def third_party_reply(request: Request) -> Response:
    """The third party ``context.call`` reaches: doubles the number it gets."""
    number = json.loads(request.get_data())["number"]
    return Response(json.dumps({"doubled": number * 2}), content_type="application/json")


def wait_for_end(dev_server: DevServer, trace: Trace, timeout: float = 20) -> None:
    """Wait until the workflow finished and the SDK ended its run on the dev server."""
    assert trace.done.wait(timeout), f"the workflow did not finish: {trace.runs}"
    deadline = time.monotonic() + timeout
    while dev_server.api.workflows.get(trace.run_ids[0]) is not None:
        assert time.monotonic() < deadline, "the SDK never ended the run"
        time.sleep(0.02)


def wait_for_sleeping_run(dev_server: DevServer, trace: Trace, timeout: float = 10) -> str:
    """Wait until the run holds init, "first" and the sleeping "pause"; return its id."""
    deadline = time.monotonic() + timeout
    while True:
        run = dev_server.api.workflows.get(trace.run_ids[0]) if trace.run_ids else None
        if run is not None and len(run.entries) == 3:
            return run.id
        assert time.monotonic() < deadline, "the workflow never reached its sleep"
        time.sleep(0.01)


def test_official_sdk_runs_a_multi_step_workflow_end_to_end(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    """run → sleep → call → run: each step once, the sleep honoured, the call's answer used."""
    endpoint.replies["/third"] = third_party_reply
    trace = Trace()
    app = workflow_app(dev_server, endpoint.url("/third"), trace)
    with running(app) as base:
        publisher = QStash(dev_server.token, base_url=dev_server.url, retry=False)
        publisher.message.publish_json(url=base + "/workflow", body={"n": 20})
        wait_for_end(dev_server, trace)

    assert trace.runs == Counter({"first": 1, "last": 1})
    assert trace.result == {"number": 21, "status": 200, "doubled": 42}
    calls = endpoint.at("/third")
    assert len(calls) == 1
    assert json.loads(calls[0].body) == {"number": 21}
    slept = calls[0].at - trace.at["first"]
    assert slept >= SLEEP * TIME_SCALE * 0.9, f"the sleep step lasted {slept:.3f}s"

    logs = api.get("/v2/workflows/logs", params={"workflowRunId": trace.run_ids[0]}).json()
    (run,) = logs["runs"]
    assert run["workflowState"] == "RUN_SUCCESS"
    assert run["workflowRunCompletedAt"] >= run["workflowRunCreatedAt"]
    steps = [group["steps"][0] for group in run["steps"]]
    assert [(s["stepName"], s["stepType"]) for s in steps] == [
        ("init", "Initial"),
        ("first", "Run"),
        ("pause", "SleepFor"),
        ("third", "Call"),
        ("last", "Run"),
    ]
    assert json.loads(steps[0]["out"]) == {"n": 20}
    assert json.loads(steps[1]["out"]) == 21
    assert json.loads(json.loads(steps[3]["out"])["body"]) == {"doubled": 42}


def test_a_call_retried_by_the_dev_server_resumes_the_run_once(
    dev_server: DevServer, endpoint: Endpoint
) -> None:
    """context.call(retries=1) to a third party failing once: the run goes on with the 200."""
    answers = iter([Response("busy", status=503), Response('{"ok": true}')])
    endpoint.replies["/flaky"] = lambda request: next(answers)
    results: list[tuple[int, Any]] = []
    done = threading.Event()
    app = Flask(__name__)
    serve = Serve(app)

    @serve.route(
        "/calling",
        qstash_client=QStash(dev_server.token, base_url=dev_server.url, retry=False),
        receiver=Receiver(
            current_signing_key=dev_server.current_key, next_signing_key=dev_server.next_key
        ),
    )
    def calling(context: Any) -> None:
        answer = context.call("flaky", url=endpoint.url("/flaky"), method="GET", retries=1)
        results.append((answer.status, answer.body))
        done.set()

    with running(app) as base:
        publisher = QStash(dev_server.token, base_url=dev_server.url, retry=False)
        publisher.message.publish_json(url=base + "/calling", body={})
        assert done.wait(15), "the run never resumed after the call"
    assert len(endpoint.at("/flaky")) == 2
    assert results == [(200, {"ok": True})]


def test_a_step_delivery_carries_the_runs_history_as_qstash_builds_it(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    """The SDK posts one step; the delivery's body is [initial payload, steps so far]."""
    run = {
        "Upstash-Workflow-RunId": "wfr_history",
        "Upstash-Workflow-Url": endpoint.url("/wf"),
        "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
        "Content-Type": "application/json",
    }
    init = {**run, "Upstash-Workflow-Init": "true"}
    step = {"stepId": 1, "stepName": "a", "stepType": "Run", "out": '"x"', "concurrent": 1}
    batch = [{"destination": endpoint.url("/wf"), "headers": init, "body": '{"n":1}'}]
    assert api.post("/v2/batch", json=batch).status_code == 201
    published = api.post(
        "/v2/publish/" + endpoint.url("/wf"),
        headers={**run, "Upstash-Workflow-Init": "false"},
        content=json.dumps(step),
    )
    assert published.status_code == 201
    deliveries = endpoint.wait_for("/wf", 2)
    for delivery in deliveries:
        assert delivery.headers["Upstash-Workflow-Runid"] == "wfr_history"
        assert delivery.headers["Upstash-Workflow-Sdk-Version"] == "1"
    # The two messages are delivered concurrently: the step's is the one with two entries.
    histories = sorted((json.loads(delivery.body) for delivery in deliveries), key=len)
    assert [len(history) for history in histories] == [1, 2]
    entries = histories[1]
    assert [e["callType"] for e in entries] == ["step", "step"]
    assert entries[1]["messageId"] == published.json()["messageId"]
    assert json.loads(_b64(entries[0]["body"])) == {"n": 1}
    assert json.loads(_b64(entries[1]["body"])) == step


def _b64(text: str) -> str:
    return base64.b64decode(text).decode()


def test_a_step_of_a_run_not_in_progress_is_refused(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    """A step for a run never started (or ended) is refused, never delivered without history."""
    headers = {"Upstash-Workflow-RunId": "wfr_unknown", "Upstash-Workflow-Init": "false"}
    answer = api.post("/v2/publish/" + endpoint.url("/wf"), headers=headers, content=b"{}")
    assert answer.status_code == 400
    assert "wfr_unknown" in answer.json()["error"]


def test_a_batch_with_a_refused_step_changes_no_run(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    """All or nothing: a batch refused for one step's unknown run starts no other run."""
    url = endpoint.url("/wf")
    start = {"Upstash-Workflow-RunId": "wfr_a", "Upstash-Workflow-Init": "true"}
    stray = {"Upstash-Workflow-RunId": "wfr_stray", "Upstash-Workflow-Init": "false"}
    batch = [
        {"destination": url, "headers": start, "body": "{}"},
        {"destination": url, "headers": stray, "body": "{}"},
    ]
    answer = api.post("/v2/batch", json=batch)
    assert answer.status_code == 400
    assert dev_server.api.workflows.get("wfr_a") is None
    assert api.post("/v2/batch", json=batch[:1]).status_code == 201
    again = api.post("/v2/batch", json=batch[:1])
    assert again.status_code == 400  # a run in progress: QStash refuses a second start
    assert "already in progress" in again.json()["error"]
    assert api.delete("/v2/workflows/runs/wfr_a").status_code == 200
    assert api.post("/v2/batch", json=batch[:1]).status_code == 201  # ended: may start again


def test_cancelling_a_run_cancels_its_pending_steps(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    """``DELETE /v2/workflows/runs/{id}?cancel=true``: the sleeping step is never delivered."""
    trace = Trace()
    app = workflow_app(dev_server, endpoint.url("/third"), trace)
    with running(app) as base:
        api.post("/v2/publish/" + base + "/workflow", json={"n": 1}).raise_for_status()
        run_id = wait_for_sleeping_run(dev_server, trace)
        answer = api.delete(f"/v2/workflows/runs/{run_id}", params={"cancel": "true"})
        assert answer.status_code == 200
        time.sleep(SLEEP * TIME_SCALE * 2)
        assert endpoint.at("/third") == []
        assert api.delete(f"/v2/workflows/runs/{run_id}").status_code == 404
        (run,) = api.get("/v2/workflows/logs", params={"state": "RUN_CANCELED"}).json()["runs"]
        assert run["workflowRunId"] == run_id
    assert trace.runs == Counter({"first": 1})


def test_a_failed_step_calls_the_failure_function_and_the_run_is_failed(
    dev_server: DevServer, api: httpx.Client
) -> None:
    """retries=0, a step that raises: the SDK's failure_function gets the run and the error."""
    failures: list[tuple[Any, int, str]] = []
    called = threading.Event()
    app = Flask(__name__)
    serve = Serve(app)

    def failure_function(context: Any, status: int, response: str, headers: Any) -> None:
        failures.append((context.request_payload, status, response))
        called.set()

    @serve.route(
        "/failing",
        qstash_client=QStash(dev_server.token, base_url=dev_server.url, retry=False),
        receiver=Receiver(
            current_signing_key=dev_server.current_key, next_signing_key=dev_server.next_key
        ),
        retries=0,
        failure_function=failure_function,
    )
    def failing(context: Any) -> None:
        def boom() -> None:
            raise RuntimeError("the step broke")

        context.run("boom", boom)

    with running(app) as base:
        api.post("/v2/publish/" + base + "/failing", json={"n": 5}).raise_for_status()
        assert called.wait(15), "the failure function was never called"
    assert failures == [({"n": 5}, 500, "the step broke")]
    deadline = time.monotonic() + 5  # the DLQ listener runs just after the callback is queued
    while (
        state := api.get("/v2/workflows/logs").json()["runs"][0]["workflowState"]
    ) != "RUN_FAILED":
        assert time.monotonic() < deadline, f"the run stayed {state}"
        time.sleep(0.01)


def test_bulk_cancel_by_ids_by_url_prefix_and_all(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    """``DELETE /v2/workflows/runs`` with the JS client's bodies; each run once."""
    for name in ("a1", "a2", "b1", "b2"):
        headers = {"Upstash-Workflow-RunId": f"wfr_{name}", "Upstash-Workflow-Init": "true"}
        url = endpoint.url(f"/{name[0]}/wf")
        api.post("/v2/publish/" + url, headers=headers, content=b"{}").raise_for_status()

    def cancel(body: Any) -> Any:
        answer = api.request("DELETE", "/v2/workflows/runs", json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()

    assert cancel({"workflowRunIds": ["wfr_a1", "wfr_nope"]}) == {"cancelled": 1}
    assert cancel({"workflowUrl": endpoint.url("/b/")}) == {"cancelled": 2}
    assert cancel({}) == {"cancelled": 1}
    assert cancel({}) == {"cancelled": 0}
    logs = api.get("/v2/workflows/logs").json()["runs"]
    assert {run["workflowState"] for run in logs} == {"RUN_CANCELED"}
    assert api.request("DELETE", "/v2/workflows/runs", json={"ids": []}).status_code == 400


def test_workflow_logs_list_runs_newest_first_in_pages(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    """Three runs started by hand: newest first, ``count`` and ``cursor`` page them."""
    for number in range(3):
        headers = {
            "Upstash-Workflow-RunId": f"wfr_{number}",
            "Upstash-Workflow-Init": "true",
            "Upstash-Workflow-Url": endpoint.url("/wf"),
        }
        api.post("/v2/publish/" + endpoint.url("/wf"), headers=headers, content=b"{}")
        time.sleep(0.002)
    first = api.get("/v2/workflows/logs", params={"count": 2}).json()
    assert [run["workflowRunId"] for run in first["runs"]] == ["wfr_2", "wfr_1"]
    assert all(run["workflowState"] == "RUN_STARTED" for run in first["runs"])
    rest = api.get("/v2/workflows/logs", params={"count": 2, "cursor": first["cursor"]}).json()
    assert [run["workflowRunId"] for run in rest["runs"]] == ["wfr_0"]
    assert "cursor" not in rest


def test_bulk_cancel_with_the_query_filters_of_the_js_sdk_1_3(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    """``?workflowRunIds=`` (repeated), ``?workflowUrl=`` (prefix, or exact with
    ``workflowUrlExactMatch=true``) and ``?count=`` alone (all, at most count)."""
    for name in ("a1", "a2", "b1", "b2", "c1"):
        headers = {"Upstash-Workflow-RunId": f"wfr_{name}", "Upstash-Workflow-Init": "true"}
        url = endpoint.url(f"/{name[0]}/wf")
        api.post("/v2/publish/" + url, headers=headers, content=b"{}").raise_for_status()

    def cancel(query: str) -> Any:
        answer = api.delete("/v2/workflows/runs?" + query)
        assert answer.status_code == 200, answer.text
        return answer.json()["cancelled"]

    assert cancel("workflowRunIds=wfr_a1&workflowRunIds=wfr_b1&workflowRunIds=wfr_x") == 2
    exact = "workflowUrlExactMatch=true&workflowUrl=" + endpoint.url("/a/")
    assert cancel(exact) == 0
    assert cancel("workflowUrl=" + endpoint.url("/a/")) == 1
    assert cancel("count=1") == 1
    assert cancel("count=100") == 1
    assert cancel("count=100") == 0


def test_a_runs_history_can_be_fetched_until_it_ends(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    """``GET /v2/workflows/runs/{id}`` (the SDK's lazy fetch): the entries a step delivery
    carries; 404 once the run ended, which the SDK reads as "the run is over"."""
    run = {"Upstash-Workflow-RunId": "wfr_fetch", "Upstash-Workflow-Url": endpoint.url("/wf")}
    init = {**run, "Upstash-Workflow-Init": "true"}
    api.post("/v2/publish/" + endpoint.url("/wf"), headers=init, content=b'{"n":1}')
    step = api.post("/v2/publish/" + endpoint.url("/wf"), headers=run, content=b'{"stepId":1}')
    (delivered,) = [d for d in endpoint.wait_for("/wf", 2) if len(json.loads(d.body)) == 2]
    fetched = api.get("/v2/workflows/runs/wfr_fetch")
    assert fetched.status_code == 200
    assert fetched.json() == json.loads(delivered.body)
    assert fetched.json()[1]["messageId"] == step.json()["messageId"]
    assert api.delete("/v2/workflows/runs/wfr_fetch").status_code == 200
    assert api.get("/v2/workflows/runs/wfr_fetch").status_code == 404


def _invoke(api: httpx.Client, endpoint: Endpoint, invoked: str, body: Any) -> httpx.Response:
    headers = {
        "Upstash-Workflow-RunId": invoked,
        "Upstash-Workflow-Init": "true",
        "Upstash-Workflow-Invoke": "true",
        "Upstash-Forward-Upstash-Workflow-Invoke-Count": "1",
        "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
    }
    url = endpoint.url("/invoked")
    return api.post("/v2/publish/" + url, headers=headers, content=json.dumps(body))


def test_context_invoke_starts_the_run_and_answers_the_invoker(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    """The invoke request's ``body`` is the invoked run's payload; when that run ends (the
    SDK's DELETE carries its result), the invoker gets its Invoke step with ``out``:
    ``{"body", "isFailed", "isCanceled"}``; a cancelled invoked run answers isCanceled."""
    invoker = {"Upstash-Workflow-RunId": "wfr_invoker", "Upstash-Workflow-Init": "true"}
    api.post("/v2/publish/" + endpoint.url("/invoker"), headers=invoker, content=b"{}")
    step = {"stepId": 1, "stepName": "inv", "stepType": "Invoke", "concurrent": 1}
    request = {
        "body": '{"n":4}',
        "headers": {"Upstash-Workflow-Runid": ["wfr_invoker"], "Upstash-Workflow-Init": ["false"]},
        "workflowRunId": "wfr_invoker",
        "workflowRunCreatedAt": 0,
        "workflowUrl": endpoint.url("/invoker"),
        "step": step,
    }
    assert _invoke(api, endpoint, "wfr_invoked", request).status_code == 201
    (started,) = endpoint.wait_for("/invoked", 1)
    assert json.loads(_b64(json.loads(started.body)[0]["body"])) == {"n": 4}
    assert started.headers["Upstash-Workflow-Invoke-Count"] == "1"
    ended = api.request("DELETE", "/v2/workflows/runs/wfr_invoked", content=b'{"squared":16}')
    assert ended.status_code == 200
    answer = endpoint.wait_for("/invoker", 2)[1]
    entries = json.loads(answer.body)
    invoke_step = json.loads(_b64(entries[-1]["body"]))
    assert json.loads(invoke_step.pop("out")) == {
        "body": '{"squared":16}',
        "isFailed": False,
        "isCanceled": False,
    }
    assert invoke_step == step

    assert _invoke(api, endpoint, "wfr_cancelled", request).status_code == 201
    api.delete("/v2/workflows/runs/wfr_cancelled", params={"cancel": "true"})
    cancelled = json.loads(_b64(json.loads(endpoint.wait_for("/invoker", 3)[2].body)[-1]["body"]))
    assert json.loads(cancelled["out"]) == {"body": None, "isFailed": False, "isCanceled": True}


def test_an_invoked_run_answers_its_invoker_after_a_restart(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    """The invoker is kept with the invoked run's pending messages: rebuilt on restart."""
    step = {"stepId": 1, "stepName": "inv", "stepType": "Invoke", "concurrent": 1}
    request = {
        "body": "{}",
        "headers": {"Upstash-Workflow-Runid": ["wfr_caller"]},
        "workflowUrl": endpoint.url("/caller"),
        "step": step,
    }
    sleeping = {"Upstash-Workflow-RunId": "wfr_callee", "Upstash-Delay": "1d"}
    db = tmp_path / "qstash.db"
    with DevServer(db=db, time_scale=TIME_SCALE).running(port=0) as server, _client(server) as api:
        caller = {"Upstash-Workflow-RunId": "wfr_caller", "Upstash-Workflow-Init": "true"}
        api.post("/v2/publish/" + endpoint.url("/caller"), headers=caller, content=b"{}")
        assert _invoke(api, endpoint, "wfr_callee", request).status_code == 201
        nap = {"stepId": 1, "stepName": "nap", "stepType": "SleepFor", "concurrent": 1}
        url = "/v2/publish/" + endpoint.url("/invoked")
        assert api.post(url, headers=sleeping, content=json.dumps(nap)).status_code == 201
    with DevServer(db=db, time_scale=TIME_SCALE).running(port=0) as server, _client(server) as api:
        # The caller had nothing pending, so it is gone: start it again to take the answer.
        api.post("/v2/publish/" + endpoint.url("/caller"), headers=caller, content=b"{}")
        ended = api.request("DELETE", "/v2/workflows/runs/wfr_callee", content=b"7")
        assert ended.status_code == 200
        answers = [d for d in endpoint.wait_for("/caller", 3) if len(json.loads(d.body)) > 1]
        (answer,) = answers
        out = json.loads(json.loads(_b64(json.loads(answer.body)[-1]["body"]))["out"])
        assert out == {"body": "7", "isFailed": False, "isCanceled": False}


def test_an_invoke_without_its_request_is_refused(endpoint: Endpoint, api: httpx.Client) -> None:
    answer = _invoke(api, endpoint, "wfr_bad", {"n": 4})
    assert answer.status_code == 400
    assert "context.invoke" in answer.json()["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/workflows/logs?label=a"),
        ("DELETE", "/v2/workflows/runs?label=a"),
        ("GET", "/v2/workflows/events?groupBy=messageId"),
        ("POST", "/v2/workflows/dlq/resume"),
        ("GET", "/v2/dlq?source=workflow"),
    ],
)
def test_workflow_endpoints_the_dev_server_lacks_answer_501(
    api: httpx.Client, method: str, path: str
) -> None:
    """Never a silent success: the missing workflow endpoints say so."""
    answer = api.request(method, path)
    assert answer.status_code == 501
    assert "the dev server does not" in answer.json()["error"]


def test_a_run_in_progress_survives_a_restart(tmp_path: Path, endpoint: Endpoint) -> None:
    """After a restart the run is rebuilt from its pending step: its next step is accepted."""
    run = {"Upstash-Workflow-RunId": "wfr_durable", "Upstash-Workflow-Url": endpoint.url("/wf")}
    step = {"stepId": 1, "stepName": "a", "stepType": "SleepFor", "out": "null", "concurrent": 1}
    db = tmp_path / "qstash.db"
    with DevServer(db=db, time_scale=TIME_SCALE).running(port=0) as server:
        with _client(server) as api:
            init = {**run, "Upstash-Workflow-Init": "true"}
            api.post("/v2/publish/" + endpoint.url("/wf"), headers=init, content=b"{}")
            sleeping = {**run, "Upstash-Delay": "1d"}
            answer = api.post(
                "/v2/publish/" + endpoint.url("/wf"), headers=sleeping, content=json.dumps(step)
            )
            assert answer.status_code == 201
    with DevServer(db=db, time_scale=TIME_SCALE).running(port=0) as server:
        restored = server.api.workflows.get("wfr_durable")
        assert restored is not None and len(restored.entries) == 2
        with _client(server) as api:
            answer = api.post("/v2/publish/" + endpoint.url("/wf"), headers=run, content=b"{}")
            assert answer.status_code == 201


def _client(server: DevServer) -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.token}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=10)
