"""The official npm ``@upstash/workflow`` SDK running workflows on the dev server end to end.

``js/workflow.mjs`` serves workflows with the SDK's ``serve`` on a loopback Node endpoint,
starts them with its ``Client.trigger`` and notifies them with ``Client.notify`` (the
Python SDK, ``upstash-workflow`` 2.0, has no wait-for-event, notify or parallel steps).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.devserver.js_oracle import run_oracle


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    db = tmp_path_factory.mktemp("js-workflow") / "qstash.db"
    return run_oracle("workflow.mjs", db, package="workflow")


def test_wait_for_event_resumes_with_the_notified_data(observed: dict[str, Any]) -> None:
    """waitForEvent → client.notify: the run goes on once with the event's data; the waiter
    was listed with its run and a deadline in unix seconds, and is gone after the notify;
    context.workflowRunCreatedAt is the run's start in unix ms."""
    section = observed["waitForEvent"]
    assert section["result"] == {"eventData": {"paid": True}, "timeout": False}, section
    assert section["ran"] == {"after": 1}
    assert section["createdAtMs"] is True  # context.workflowRunCreatedAt: the run's start
    assert section["waiter"]["url"].endswith("/wf/wait")
    assert section["waiter"]["deadlineInSeconds"] is True
    (run_id,) = section["waiter"]["runId"]
    assert section["notified"] == [{"runId": run_id, "hasMessageId": True}]
    assert section["afterwards"] == {"waiters": 0, "notified": 0}


def test_a_wait_nobody_notifies_times_out(observed: dict[str, Any]) -> None:
    """waitForEvent with a timeout and no notify: the run goes on with ``timeout: true``."""
    assert observed["timeout"] == {"result": {"eventData": None, "timeout": True}, "waiters": 0}


def test_parallel_runs_each_branch_once(observed: dict[str, Any]) -> None:
    """Promise.all of three context.run: plan and result steps, results in order, each
    branch and the step after them run once."""
    assert observed["parallel"] == {
        "result": {"results": [1, 2, 3], "sum": 6},
        "ran": {"a": 1, "b": 1, "c": 1, "sum": 1},
    }


def test_sleep_until_wakes_the_run_at_that_time(observed: dict[str, Any]) -> None:
    """sleepUntil 100 s of QStash time ahead (Upstash-Not-Before): ~1 s at the scale."""
    assert observed["sleepUntil"]["sleptAboutOneSecond"] is True, observed["sleepUntil"]


def test_parallel_sleep_call_and_run(observed: dict[str, Any]) -> None:
    """Promise.all of sleep, call and run: the call reaches the third party once, its
    answer and the run's result come back, the step after them runs once."""
    assert observed["parallelKinds"] == {
        "result": {"status": 200, "body": {"doubled": 10}, "value": "done"},
        "ran": {"work": 1, "after": 1},
        "calls": 1,
    }


def test_a_wait_in_parallel_with_a_run(observed: dict[str, Any]) -> None:
    """Promise.all of waitForEvent and run, then a sleep: both results reach the run."""
    assert observed["mixed"] == {
        "result": {"eventData": "go", "timeout": False, "value": "done"},
        "ran": {"work": 1},
    }


def test_context_notify_resumes_another_run(observed: dict[str, Any]) -> None:
    """context.notify inside one workflow resumes the run waiting for the event."""
    assert observed["contextNotify"] == {
        "notifier": {"eventId": "evt-2", "eventData": {"from": "notifier"}, "notified": 1},
        "waiting": {"eventData": {"from": "notifier"}, "timeout": False},
    }


def test_a_run_scoped_notify_before_the_wait_is_kept(observed: dict[str, Any]) -> None:
    """notify({workflowRunId}) before the run waits: its wait takes the kept event."""
    assert observed["lookback"] == {
        "early": "object",
        "result": {"eventData": "early", "timeout": False},
    }


def test_context_call_then_sleep(observed: dict[str, Any]) -> None:
    """context.call reaches the third party once; its answer resumes the run after a sleep."""
    assert observed["call"] == {
        "result": {"status": 200, "body": {"doubled": 42}},
        "ran": {"after": 1},
        "thirdParty": [{"n": 21}],
    }


def test_client_cancel_by_ids_url_prefix_and_all(observed: dict[str, Any]) -> None:
    """client.cancel (query filters since 1.3): by id, by URL prefix, all; waiters go too."""
    assert observed["cancel"] == {
        "byId": {"cancelled": 1},
        "byUrl": {"cancelled": 2},
        "all": "number",
        "waiters": [0, 0, 0],
    }


def test_context_invoke_returns_the_invoked_runs_result(observed: dict[str, Any]) -> None:
    """context.invoke (workflows served by serveMany): the invoked run starts with the
    invoke's body and its result comes back to the invoker; a failing invoked run comes
    back as isFailed."""
    assert observed["invoke"] == {
        "squared": {
            "body": {"squared": 16},
            "isFailed": False,
            "isCanceled": False,
            "ran": {"after": 1},
        },
        "refusing": {"body": None, "isFailed": True, "isCanceled": False, "ran": {"after": 1}},
        "squareRan": 1,
    }


def test_client_logs_list_the_run_with_its_steps_and_response(observed: dict[str, Any]) -> None:
    """client.logs (GET /v2/workflows/events?groupBy=workflowRunId): the ended call run,
    its steps in order, and the route function's result the SDK sent when it ended."""
    assert observed["logs"] == {
        "steps": ["init:Initial", "third:Call", "pause:SleepFor", "after:Run"],
        "response": '{"called":true}',
    }


def test_failure_function_after_a_failed_or_non_retryable_step(observed: dict[str, Any]) -> None:
    """A step that throws with retries: 0 (500), and WorkflowNonRetryableError (489, no
    retry): each is tried once and the run's failureFunction gets its payload and error."""
    assert observed["failure"] == {
        "thrown": {
            "payload": {"final": False},
            "failStatus": 500,
            "failResponse": "the step broke",
            "ran": {"boom": 1},
        },
        "final": {
            "payload": {"final": True},
            "failStatus": 489,
            "failResponse": "no point retrying",
            "ran": {"boom": 1},
        },
    }
