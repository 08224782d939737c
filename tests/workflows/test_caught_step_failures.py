"""A step's failure stops the delivery even when the workflow function catches it.

A step that raised was not recorded: the run must not go on past it in this delivery, or
the steps after it would be recorded on top of a position that a later replay runs again
(and, on that replay, the code takes the other branch of its ``try``). So whatever the
function catches, its next step call (or its return) raises that failure again: the
delivery is retried with the workflow's policy, the step runs again, and after the last
attempt the run fails naming the step and its error. The same holds for a lost lease (a
step that outlived the run's lease, which another delivery then took): the delivery
stops at once and the new holder goes on.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import update

from app.jobs import JobRegistry
from app.store import get_store
from app.store.schema import workflow_runs
from app.testing import StubQueue
from app.workflows import Workflow, get_run, resume, workflow
from app.workflows.state import now_ms


def careful(registry: JobRegistry, charge: Any, effects: list[str], *, then: str) -> Workflow:
    """A workflow that catches its first step's failure (then: a step, or return)."""

    @workflow("careful", registry=registry, retries=2)
    def flow(ctx: Any, payload: Any) -> str:
        try:
            ctx.run("charge", charge, ctx.run_id)
        except Exception:
            if then == "step":
                ctx.run("refund", effects.append, "refund")
            return "refunded"
        ctx.run("receipt", effects.append, "receipt")
        return "done"

    return flow


def run_it(app: Flask, queue: StubQueue, flow: Workflow) -> Any:
    with app.app_context():
        run_id = flow.start({})
        queue.drain()
        return get_run(run_id)


def test_a_caught_step_failure_is_retried_and_fails_the_run_naming_the_step(
    make_app: Any, registry: JobRegistry
) -> None:
    effects: list[str] = []

    def charge(run_id: str) -> None:
        effects.append("charge")
        raise ValueError("card declined")

    flow = careful(registry, charge, effects, then="step")
    app, queue = make_app()
    run = run_it(app, queue, flow)
    assert effects == ["charge"] * 3  # the first try and both retries; never a refund
    assert run.state == "failed" and run.failed_step == "charge"
    assert "ValueError: card declined" in (run.error or "")


@pytest.mark.parametrize("then", ["step", "return"])
def test_a_caught_step_failure_then_a_success_goes_on_as_if_never_caught(
    make_app: Any, registry: JobRegistry, then: str
) -> None:
    effects: list[str] = []

    def charge(run_id: str) -> str:
        effects.append("charge")
        if effects.count("charge") == 1:
            raise ValueError("timeout")
        return "charged"

    flow = careful(registry, charge, effects, then=then)
    app, queue = make_app()
    run = run_it(app, queue, flow)
    assert run.state == "completed" and run.output == '"done"'
    assert effects == ["charge", "charge", "receipt"]
    assert [s.name for s in run.steps] == ["charge", "receipt"]


def take_lease(app: Flask, run_id: str, token: str | None) -> None:
    """As another delivery that took the expired lease (None: gives it back)."""
    store = get_store(app)
    assert store is not None
    until = now_ms() + 60_000 if token else None
    with store.engine.begin() as conn:
        conn.execute(
            update(workflow_runs)
            .where(workflow_runs.c.id == run_id)
            .values(lease_token=token, lease_message=None, lease_until_ms=until)
        )


def test_a_lost_lease_caught_by_the_workflow_stops_the_delivery(
    make_app: Any, registry: JobRegistry
) -> None:
    effects: list[str] = []

    def charge(run_id: str) -> str:
        effects.append("charge")
        if effects.count("charge") == 1:
            take_lease(app, run_id, "another-delivery")  # the step outlived the lease
        return "charged"

    flow = careful(registry, charge, effects, then="step")
    app, queue = make_app()
    with app.app_context():
        run_id = flow.start({})
        [start] = queue.drain()
        assert start.state == "delivered" and start.statuses == [200]  # busy: not an error
        assert effects == ["charge"] and get_run(run_id).steps == ()
        take_lease(app, run_id, None)  # the other holder gave up (its worker died)
        resume(run_id)
        queue.drain(fail_fast=True)
        run = get_run(run_id)
    assert run.state == "completed" and run.output == '"done"'
    # "charge" never completed the first time: it ran again, as promised; no refund.
    assert effects == ["charge", "charge", "receipt"]


@pytest.mark.parametrize("wait", ["sleep", "wait_for_event", "parallel"])
def test_a_lost_lease_caught_around_a_wait_stops_the_delivery(
    make_app: Any, registry: JobRegistry, wait: str
) -> None:
    effects: list[str] = []

    @workflow("waits", registry=registry)
    def flow(ctx: Any, payload: Any) -> str:
        ctx.run("one", effects.append, "one")
        if effects == ["one"]:
            take_lease(app, ctx.run_id, "another-delivery")  # the code outlived the lease
        try:
            if wait == "sleep":
                ctx.sleep("nap", 10)
            elif wait == "wait_for_event":
                ctx.wait_for_event("confirm", "confirm:1", timeout="1h")
            else:
                ctx.parallel(("a", effects.append, "a"), ("b", effects.append, "b"))
        except Exception:
            ctx.run("oops", effects.append, "oops")
        return "done"

    app, queue = make_app()
    with app.app_context():
        run_id = flow.start({})
        [start] = queue.drain()
        run = get_run(run_id)
    assert start.state == "delivered" and start.statuses == [200]
    assert effects == ["one"]  # never "oops": nothing runs once the lease is lost
    assert [s.name for s in run.steps] == ["one"]
