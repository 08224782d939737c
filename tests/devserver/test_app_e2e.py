"""Retry semantics end to end: the dev server delivering to the real app under gunicorn."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.devserver import DevServer
from tests.servers import free_port, gunicorn

pytestmark = pytest.mark.e2e
TIME_SCALE = 0.01


@dataclass
class Stack:
    """The dev server, the app's URL and where the fixture jobs record attempts."""

    server: DevServer
    app_url: str
    state: Path
    api: httpx.Client

    def publish(self, job: str, payload: Any = None, **headers: str) -> str:
        """Publish ``payload`` to the app's job ``job``; return the message id."""
        url = f"{self.app_url}/api/jobs/{job}"
        response = self.api.post(f"/v2/publish/{url}", json=payload or {}, headers=headers)
        assert response.status_code == 201, response.text
        message_id: str = response.json()["messageId"]
        return message_id

    def attempts(
        self, job: str, message_id: str, count: int, timeout: float = 10
    ) -> list[dict[str, Any]]:
        """Wait until the job recorded ``count`` attempts of ``message_id``; return them."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            path = self.state / f"{job}.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            rows = [r for r in map(json.loads, lines) if r["message_id"] == message_id]
            if len(rows) >= count:
                return rows
            time.sleep(0.02)
        raise AssertionError(f"{job}: {len(rows)} of {count} attempts of {message_id}")

    def dead_letter(self, message_id: str, timeout: float = 10) -> dict[str, Any]:
        """Wait for ``message_id`` in the DLQ and return its entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.api.get("/v2/dlq").json()["messages"]:
                if entry["messageId"] == message_id:
                    return dict(entry)
            time.sleep(0.02)
        raise AssertionError(f"{message_id} never reached the DLQ")

    def callbacks_about(self, message_id: str, count: int = 1) -> list[dict[str, Any]]:
        """Wait for ``count`` callback bodies about ``message_id`` recorded by the sink."""
        deadline = time.monotonic() + 10
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            path = self.state / "callback-sink.jsonl"
            rows = map(json.loads, path.read_text().splitlines()) if path.exists() else []
            found = [r["payload"] for r in rows if r["payload"]["sourceMessageId"] == message_id]
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"{len(found)} of {count} callbacks about {message_id}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    state = tmp / "state"
    state.mkdir()
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    with DevServer(db=tmp / "qstash.db", time_scale=TIME_SCALE).running(port=0) as server:
        env = {
            **server.env(),
            "QSTASH_DEV": "1",
            "APP_URL": app_url,
            "JOBS_PACKAGES": "tests.devserver.jobs_fixture",
            "FIXTURE_STATE_DIR": str(state),
            "LOG_LEVEL": "warning",
        }
        env.pop("QSTASH_CURRENT_SIGNING_KEY")  # QSTASH_DEV=1 alone must wire the keys
        with (
            gunicorn(tmp, env, port=port, workers=2),
            httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=10
            ) as api,
        ):
            yield Stack(server, app_url, state, api)


def test_fail_twice_then_succeed(stack: Stack) -> None:
    """Two 500s then 200: three attempts with Upstash-Retried 0, 1, 2, nothing in the DLQ."""
    message_id = stack.publish("flaky")
    rows = stack.attempts("flaky", message_id, 3)
    assert [r["retried"] for r in rows] == [0, 1, 2]
    time.sleep(0.1)
    assert stack.server.store.load(message_id) is None
    assert [a.status for a in stack.server.store.attempts(message_id)] == [500, 500, 200]


def test_non_retryable_goes_to_dlq_with_failure_callback(stack: Stack) -> None:
    """NonRetryableError: one attempt, a DLQ entry, a failure callback with its dlqId."""
    sink = f"{stack.app_url}/api/jobs/callback-sink"
    message_id = stack.publish("give-up", {"a": 1}, **{"Upstash-Failure-Callback": sink})
    entry = stack.dead_letter(message_id)
    callback = stack.callbacks_about(message_id)[0]
    assert len(stack.attempts("give-up", message_id, 1)) == 1
    assert entry["responseStatus"] == 489
    assert callback["dlqId"] == entry["dlqId"] and callback["status"] == 489
    answer = callback["body"]
    assert answer["message"] == "the account is gone"
    time.sleep(0.3)
    assert len(stack.attempts("give-up", message_id, 1)) == 1


def test_retry_after_from_the_app_is_honoured(stack: Stack) -> None:
    """RetryLater(after=90) → Retry-After: 90 → the retry comes 90 s later (scaled), not 12 s."""
    message_id = stack.publish("later")
    first, second = stack.attempts("later", message_id, 2)
    assert 0.885 <= second["at"] - first["at"] <= 0.9 + 0.5


def test_timeout_fails_the_attempt(stack: Stack) -> None:
    """A job slower than Upstash-Timeout is a failed attempt (here: straight to the DLQ)."""
    started = time.monotonic()
    message_id = stack.publish(
        "slow", {"seconds": 2}, **{"Upstash-Timeout": "1s", "Upstash-Retries": "0"}
    )
    entry = stack.dead_letter(message_id)
    assert entry["responseStatus"] == 0
    assert time.monotonic() - started < 1.9


def test_callback_bodies_carry_the_apps_answers(stack: Stack) -> None:
    """Upstash-Callback gets one body per attempt, decoded by the app's own callback parser."""
    sink = f"{stack.app_url}/api/jobs/callback-sink"
    message_id = stack.publish("flaky", {"n": 1}, **{"Upstash-Callback": sink})
    bodies = sorted(stack.callbacks_about(message_id, 3), key=lambda b: b["retried"])
    assert [(b["retried"], b["status"]) for b in bodies] == [(0, 500), (1, 500), (2, 200)]
    assert bodies[2]["body"] == {"retried": 2}
    assert bodies[0]["sourceBody"] == {"n": 1}
    assert bodies[0]["url"] == f"{stack.app_url}/api/jobs/flaky"
    assert bodies[0]["sourceHeader"]["Upstash-Message-Id"] == [message_id]
