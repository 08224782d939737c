"""Wait-for-event and notify on the wire, as ``@upstash/workflow`` 1.3 speaks them.

The SDK's wait step posts ``/v2/wait/{eventId}`` with the run's headers and ``{"url",
"step", "timeout", "timeoutUrl", "timeoutHeaders"}``; the dev server resumes the run with a
``Wait`` step when notified (``out``: the event data in base64) or at the deadline
(``waitTimeout: true``). End to end with the SDK itself: ``test_workflow_js.py``.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx

from app.devserver import DevServer
from tests.devserver.conftest import TIME_SCALE
from tests.devserver.endpoint import Endpoint

STEP = {"stepId": 1, "stepName": "wait", "stepType": "Wait", "concurrent": 1}


def _run_headers(run_id: str, url: str) -> dict[str, str]:
    return {
        "Upstash-Workflow-RunId": run_id,
        "Upstash-Workflow-Url": url,
        "Upstash-Workflow-Init": "false",
        "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
        "Content-Type": "application/json",
    }


def _start(api: httpx.Client, run_id: str, url: str) -> None:
    headers = {**_run_headers(run_id, url), "Upstash-Workflow-Init": "true"}
    answer = api.post("/v2/publish/" + url, headers=headers, content=b'{"n":1}')
    assert answer.status_code == 201, answer.text


def _wait(
    api: httpx.Client, run_id: str, url: str, event_id: str, timeout: str = "1d"
) -> httpx.Response:
    body = {
        "url": url,
        "timeout": timeout,
        "timeoutUrl": url + "/timeout",
        "timeoutHeaders": {
            name: [value] for name, value in _run_headers(run_id, url + "/timeout").items()
        },
        "step": STEP,
    }
    return api.post(f"/v2/wait/{event_id}", headers=_run_headers(run_id, url), json=body)


def _last_step(body: bytes) -> dict[str, Any]:
    entries = json.loads(body)
    step: dict[str, Any] = json.loads(base64.b64decode(entries[-1]["body"]))
    return step


def test_notify_resumes_the_waiting_run_with_a_wait_step(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    """The notified step carries the run's history, the event data in base64 as ``out``,
    and the run's headers; notify and the waiters list answer QStash's shapes."""
    url = endpoint.url("/wf")
    _start(api, "wfr_w", url)
    endpoint.wait_for("/wf", 1)
    assert _wait(api, "wfr_w", url, "paid").status_code == 200

    (waiter,) = api.get("/v2/waiters/paid").json()
    assert waiter["url"] == url and waiter["timeoutUrl"] == url + "/timeout"
    assert waiter["headers"]["Upstash-Workflow-Runid"] == ["wfr_w"]
    assert abs(waiter["deadline"] - (time.time() + 86400 * TIME_SCALE)) < 5

    notified = api.post("/v2/notify/paid", content=b'{"amount":5}').json()
    assert [(n["workflowRunId"], n["waiter"]["url"]) for n in notified] == [("wfr_w", url)]
    (delivery,) = endpoint.wait_for("/wf", 2)[1:]
    assert delivery.headers["Upstash-Message-Id"] == notified[0]["messageId"]
    assert delivery.headers["Upstash-Workflow-Runid"] == "wfr_w"
    assert delivery.headers["Upstash-Workflow-Sdk-Version"] == "1"
    assert len(json.loads(delivery.body)) == 2  # the initial payload, then the wait step
    step = _last_step(delivery.body)
    assert step == {
        **STEP,
        "waitEventId": "paid",
        "timeout": "1d",
        "waitTimeout": False,
        "out": base64.b64encode(b'{"amount":5}').decode(),
    }
    assert api.get("/v2/waiters/paid").json() == []
    assert api.post("/v2/notify/paid", content=b"again").json() == []


def test_a_waiter_not_notified_resumes_at_its_deadline_once(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    """At the deadline the step goes to ``timeoutUrl`` with ``waitTimeout: true`` and no
    ``out``; a notify after it finds no waiter."""
    url = endpoint.url("/wf")
    _start(api, "wfr_t", url)
    assert _wait(api, "wfr_t", url, "late", timeout="10s").status_code == 200
    (delivery,) = endpoint.wait_for("/wf/timeout", 1)
    step = _last_step(delivery.body)
    assert step["waitTimeout"] is True and "out" not in step
    assert delivery.headers["Upstash-Workflow-Runid"] == "wfr_t"
    assert api.post("/v2/notify/late", content=b"x").json() == []
    time.sleep(0.2)
    assert len(endpoint.at("/wf/timeout")) == 1


def test_a_run_scoped_notify_is_kept_until_the_run_waits(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    """``/v2/notify/{runId}/{eventId}`` with no waiter keeps the event; the run's wait for
    it resumes at once, and a broadcast notify never sees the kept event."""
    url = endpoint.url("/wf")
    _start(api, "wfr_k", url)
    assert api.post("/v2/notify/wfr_k/early", content=b"first").json() == {"workflowRunId": "wfr_k"}
    assert api.post("/v2/notify/early", content=b"x").json() == []
    assert _wait(api, "wfr_k", url, "early").status_code == 200
    (delivery,) = endpoint.wait_for("/wf", 2)[1:]
    assert base64.b64decode(_last_step(delivery.body)["out"]) == b"first"
    assert api.get("/v2/waiters/early").json() == []


def test_cancelling_a_waiting_run_drops_its_waiter(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    url = endpoint.url("/wf")
    _start(api, "wfr_c", url)
    assert _wait(api, "wfr_c", url, "never").status_code == 200
    assert api.delete("/v2/workflows/runs/wfr_c", params={"cancel": "true"}).status_code == 200
    assert api.get("/v2/waiters/never").json() == []
    assert api.post("/v2/notify/never", content=b"x").json() == []


def test_a_wait_is_refused_when_it_cannot_resume(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    """No run in progress: 400 (the SDK then ends quietly); a timeoutBody: 501."""
    url = endpoint.url("/wf")
    assert _wait(api, "wfr_none", url, "e").status_code == 400
    _start(api, "wfr_b", url)
    body = {"url": url, "timeout": "1m", "step": STEP, "timeoutBody": "eA=="}
    answer = api.post("/v2/wait/e", headers=_run_headers("wfr_b", url), json=body)
    assert answer.status_code == 501
    assert "timeoutBody" in answer.json()["error"]
    bad = api.post("/v2/wait/e", headers=_run_headers("wfr_b", url), json={"url": url})
    assert bad.status_code == 400


def test_a_waiting_run_survives_a_restart(tmp_path: Path, endpoint: Endpoint) -> None:
    """The waiter and the run's history are stored: after a restart the notify resumes
    the run with its whole history, and a second waiter's deadline still fires."""
    url = endpoint.url("/wf")
    db = tmp_path / "qstash.db"
    with DevServer(db=db, time_scale=TIME_SCALE).running(port=0) as server:
        with _client(server) as api:
            _start(api, "wfr_r", url)
            _start(api, "wfr_s", url)
            endpoint.wait_for("/wf", 2)
            assert _wait(api, "wfr_r", url, "later").status_code == 200
            assert _wait(api, "wfr_s", url, "never", timeout="30s").status_code == 200
    with DevServer(db=db, time_scale=TIME_SCALE).running(port=0) as server:
        with _client(server) as api:
            (answer,) = api.post("/v2/notify/later", content=b"back").json()
            assert answer["workflowRunId"] == "wfr_r" and answer["messageId"]
            (delivery,) = endpoint.wait_for("/wf", 3)[2:]
            assert len(json.loads(delivery.body)) == 2
            timed_out = endpoint.wait_for("/wf/timeout", 1)
            assert _last_step(timed_out[0].body)["waitTimeout"] is True


def _client(server: DevServer) -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.token}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=10)


def test_a_wait_for_a_webhook_answers_501(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    """waitForWebhook posts the same wait; without webhooks it would never resume right."""
    url = endpoint.url("/wf")
    _start(api, "wfr_h", url)
    step = {**STEP, "stepType": "WaitForWebhook"}
    body = {"url": url, "timeout": "1m", "step": step}
    answer = api.post("/v2/wait/evt_h", headers=_run_headers("wfr_h", url), json=body)
    assert answer.status_code == 501
    assert "webhooks" in answer.json()["error"]


def test_a_wait_posted_again_waits_once(
    dev_server: DevServer, endpoint: Endpoint, api: httpx.Client
) -> None:
    """The SDK posts its wait again when the step's delivery is retried: one waiter, one
    resumption; another step of the run waiting for the same event is another waiter."""
    url = endpoint.url("/wf")
    _start(api, "wfr_again", url)
    assert _wait(api, "wfr_again", url, "twice").status_code == 200
    assert _wait(api, "wfr_again", url, "twice").status_code == 200
    assert len(api.get("/v2/waiters/twice").json()) == 1
    body = {"url": url, "timeout": "1d", "step": {**STEP, "stepId": 2}}
    other = api.post("/v2/wait/twice", headers=_run_headers("wfr_again", url), json=body)
    assert other.status_code == 200
    assert len(api.post("/v2/notify/twice", content=b"x").json()) == 2
