"""A short event timeout still waits: the clock slack is for timers, not the first reach."""

from __future__ import annotations

import json
from typing import Any

from app.jobs import JobRegistry
from app.workflows import get_run, notify, workflow


def test_a_one_second_event_timeout_waits_for_an_event(
    make_app: Any, registry: JobRegistry
) -> None:
    """wait_for_event(timeout="1s") suspends when first reached; an event then resumes it."""

    @workflow("short-wait", registry=registry)
    def short_wait(ctx: Any, payload: Any) -> Any:
        return ctx.wait_for_event("upgraded", "evt-short", timeout="1s")

    app, queue = make_app()
    with app.app_context():
        run_id = short_wait.start({})
    [start] = queue.pending
    queue._attempt(start, {}, True)  # noqa: SLF001 - only the start delivery
    with app.app_context():
        assert get_run(run_id).state == "waiting"
        assert notify("evt-short", {"plan": "pro"}) == [run_id]
    queue.drain(fail_fast=True)
    with app.app_context():
        finished = get_run(run_id)
    assert finished.state == "completed"
    assert json.loads(finished.output or "null") == {"plan": "pro"}
