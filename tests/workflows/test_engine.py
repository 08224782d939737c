"""The workflow engine's guarantees, through signed deliveries and the stub queue's clock."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from flask import Flask
from marshmallow import Schema, ValidationError, fields

from app.errors import NonRetryableError
from app.jobs import JobRegistry
from app.testing import DeliveryClient, StubQueue
from app.workflows import (
    RunFailure,
    UnknownRun,
    cancel,
    get_run,
    list_runs,
    notify,
    workflow,
)
from app.workflows.state import now_ms

DAY = 86_400


class Effects:
    """What the steps did, outside the store: a step that ran twice shows here twice."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def __call__(self, name: str, value: Any = None) -> Any:
        self.log.append((name, value))
        return value

    def counts(self) -> Counter[str]:
        return Counter(name for name, _ in self.log)


@pytest.fixture
def effects() -> Effects:
    return Effects()


def deliver_due(queue: StubQueue, within: float = 0.0) -> int:
    """Deliver every pending message due within ``within`` seconds of the clock."""
    delivered = 0
    while True:
        due = [m for m in queue.pending if m.due <= queue.clock + within]
        if not due:
            return delivered
        queue.clock = max(queue.clock, due[0].due)
        queue._attempt(due[0], {}, False)  # noqa: SLF001 - one step of drain()
        delivered += 1


class Signup(Schema):
    email = fields.Email(required=True)


def onboarding(registry: JobRegistry, effects: Effects, **options: Any) -> Any:
    @workflow("onboard", schema=Signup, registry=registry, **options)
    def onboard(ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
        user = ctx.run("create", effects, "create", {"id": 7, "email": payload["email"]})
        ctx.sleep("wait-3-days", "3d")
        plan = ctx.run("plan", effects, "plan", "free")
        if plan == "free":
            ctx.run("tips", effects, "tips", True)
        confirmed = ctx.wait_for_event("confirmed", f"confirmed:{user['id']}", timeout="7d")
        a, b = ctx.parallel(("score", effects, "score", 42), ("crm", effects, "crm", "ok"))
        return {"confirmed": confirmed, "score": a, "crm": b}

    return onboard


def test_a_run_sleeps_waits_and_fans_out_on_the_virtual_clock(
    make_app: Any, registry: JobRegistry, effects: Effects
) -> None:
    onboard = onboarding(registry, effects)
    app, queue = make_app()
    with app.app_context():
        run_id = onboard.start({"email": "a@example.com"})
        deliver_due(queue)
        run = get_run(run_id)
        assert run.state == "waiting" and run.waiting_for.startswith("sleep wait-3-days")
        assert effects.counts() == {"create": 1}
        deliver_due(queue, within=3 * DAY + 5)
        assert get_run(run_id).waiting_for.startswith("event confirmed:7")
        assert notify("confirmed:7", {"by": "link"}) == [run_id]
        queue.drain(fail_fast=True)
        run = get_run(run_id)
    assert run.state == "completed", run.error
    assert json.loads(run.output or "") == {"confirmed": {"by": "link"}, "score": 42, "crm": "ok"}
    assert effects.counts() == {"create": 1, "plan": 1, "tips": 1, "score": 1, "crm": 1}
    assert [(s.name, s.branch) for s in run.steps] == [
        ("create", -1), ("wait-3-days", -1), ("plan", -1), ("tips", -1), ("confirmed", -1),
        ("score + crm", -1), ("score", 0), ("crm", 1),
    ]  # fmt: skip


def test_an_event_timeout_resumes_with_none(
    make_app: Any, registry: JobRegistry, effects: Effects
) -> None:
    onboard = onboarding(registry, effects)
    app, queue = make_app()
    with app.app_context():
        run_id = onboard.start({"email": "a@example.com"})
        queue.drain(fail_fast=True)  # 3 days, then 7 days without the event
        run = get_run(run_id)
    assert run.state == "completed"
    assert json.loads(run.output or "")["confirmed"] is None


def test_an_event_notified_before_the_wait_is_not_lost(
    make_app: Any, registry: JobRegistry, effects: Effects
) -> None:
    onboard = onboarding(registry, effects)
    app, queue = make_app()
    with app.app_context():
        run_id = onboard.start({"email": "a@example.com"})
        assert notify("confirmed:7", "early") == []  # nobody waits yet: kept
        queue.drain(fail_fast=True)
        run = get_run(run_id)
    assert json.loads(run.output or "")["confirmed"] == "early"


def test_an_event_from_before_the_run_started_does_not_count(
    make_app: Any, registry: JobRegistry, effects: Effects
) -> None:
    onboard = onboarding(registry, effects)
    app, queue = make_app()
    with app.app_context():
        notify("confirmed:7", "an older run's")
        run_id = onboard.start({"email": "a@example.com"})
        queue.drain(fail_fast=True)
        assert json.loads(get_run(run_id).output or "")["confirmed"] is None


def test_one_notification_resumes_every_run_waiting_for_it(
    make_app: Any, registry: JobRegistry, effects: Effects
) -> None:
    @workflow("waiter", registry=registry)
    def waiter(ctx: Any, payload: Any) -> Any:
        return ctx.wait_for_event("wait", "go", timeout="1d")

    app, queue = make_app()
    with app.app_context():
        ids = [waiter.start(n) for n in range(3)]
        deliver_due(queue)
        assert sorted(notify("go", 5)) == sorted(ids)
        deliver_due(queue)
        assert [get_run(i).output for i in ids] == ["5", "5", "5"]


def test_starting_is_idempotent_per_run_id(
    make_app: Any, registry: JobRegistry, effects: Effects
) -> None:
    onboard = onboarding(registry, effects)
    app, queue = make_app()
    with app.app_context():
        assert onboard.start({"email": "a@example.com"}, run_id="user-7") == "user-7"
        queue.drain()
        assert onboard.start({"email": "b@example.com"}, run_id="user-7") == "user-7"
        queue.drain()
        assert len(list_runs()) == 1
    assert effects.counts()["create"] == 1


def test_a_payload_failing_the_schema_starts_nothing(
    make_app: Any, registry: JobRegistry, effects: Effects
) -> None:
    onboard = onboarding(registry, effects)
    app, queue = make_app()
    with app.app_context():
        with pytest.raises(ValidationError):
            onboard.start({"email": "not an email"})
        assert queue.messages == []
    # Published by someone else straight to the endpoint: 489, and no run row.
    response = DeliveryClient(app).deliver("onboard", {"email": 5}, query="run=r1")
    assert response.status_code == 489
    assert response.headers["Upstash-NonRetryable-Error"] == "true"
    assert response.json["code"] == "invalid_payload"
    with app.app_context():
        assert list_runs() == []


def test_a_plain_publish_to_the_endpoint_starts_a_run(
    make_app: Any, registry: JobRegistry, effects: Effects
) -> None:
    onboard = onboarding(registry, effects)
    app, queue = make_app()
    client = DeliveryClient(app)
    first = client.deliver("onboard", {"email": "a@example.com"}, message_id="msg_1")
    again = client.deliver("onboard", {"email": "a@example.com"}, message_id="msg_1", retried=1)
    assert first.status_code == 200 and again.status_code == 200
    with app.app_context():
        (run,) = list_runs()
    assert run.id == "wfr_msg_1" and run.workflow == onboard.name
    assert effects.counts() == {"create": 1}


def test_every_delivery_body_is_empty_and_the_url_short(
    make_app: Any, registry: JobRegistry
) -> None:
    big = "x" * 1000

    @workflow("steps", registry=registry, retries=0)
    def steps(ctx: Any, payload: Any) -> int:
        for number in range(20):
            ctx.run(f"s{number}", lambda: big)
            ctx.sleep(f"z{number}", 1)
        return 20

    app, queue = make_app()
    with app.app_context():
        steps.start()
        queue.drain(fail_fast=True)
    pokes = queue.messages[1:]
    assert len(pokes) == 20
    assert {m.message.body for m in pokes} == {b""}
    assert max(len(m.message.destination) for m in pokes) < 120


def test_a_changed_step_order_fails_the_run_naming_both_steps(
    make_app: Any, registry: JobRegistry
) -> None:
    names = iter(["first", "second"])
    failures: list[RunFailure] = []

    @workflow("fickle", registry=registry, on_failure=failures.append)
    def fickle(ctx: Any, payload: Any) -> None:
        ctx.run(next(names), lambda: 1)
        ctx.sleep("nap", 60)

    app, queue = make_app()
    with app.app_context():
        run_id = fickle.start()
        queue.drain()
        run = get_run(run_id)
    assert run.state == "failed"
    assert "'second' (run) at position 0" in (run.error or "")
    assert "recorded 'first' (run)" in (run.error or "")
    assert [f.run_id for f in failures] == [run_id]
    assert queue.messages[-1].statuses == [489]


def test_a_failing_step_is_retried_and_later_steps_get_their_own_retries(
    make_app: Any, registry: JobRegistry, effects: Effects
) -> None:
    attempts = Counter[str]()

    def flaky(name: str, fails: int) -> str:
        attempts[name] += 1
        if attempts[name] <= fails:
            raise RuntimeError(f"{name} failed")
        return effects(name, name)

    @workflow("flaky", registry=registry, retries=2)
    def flow(ctx: Any, payload: Any) -> list[str]:
        return [ctx.run(n, flaky, n, 2) for n in ("a", "b", "c")]

    app, queue = make_app()
    with app.app_context():
        run_id = flow.start()
        queue.drain()
        run = get_run(run_id)
    assert run.state == "completed", run.error
    assert attempts == {"a": 3, "b": 3, "c": 3}  # 2 retries each, never shared
    assert effects.counts() == {"a": 1, "b": 1, "c": 1}


def test_a_step_failing_every_retry_fails_the_run_once(
    make_app: Any, registry: JobRegistry, effects: Effects
) -> None:
    failures: list[RunFailure] = []

    @workflow("doomed", registry=registry, retries=1, on_failure=failures.append)
    def doomed(ctx: Any, payload: Any) -> None:
        ctx.run("ok", effects, "ok")
        ctx.run("boom", lambda: 1 / 0)

    app, queue = make_app()
    with app.app_context():
        run_id = doomed.start({"user": 1})
        queue.drain()
        run = get_run(run_id)
    assert run.state == "failed" and run.failed_step == "boom"
    assert "ZeroDivisionError" in (run.error or "")
    (failure,) = failures
    assert (failure.step, json.loads(failure.input)) == ("boom", {"user": 1})
    assert queue.messages[0].statuses == [500, 489]
    assert effects.counts() == {"ok": 1}


def test_a_non_retryable_error_fails_the_run_at_once(make_app: Any, registry: JobRegistry) -> None:
    def refuse() -> None:
        raise NonRetryableError("the account is closed")

    @workflow("refuses", registry=registry, retries=5)
    def refuses(ctx: Any, payload: Any) -> None:
        ctx.run("refuse", refuse)

    app, queue = make_app()
    with app.app_context():
        run_id = refuses.start()
        queue.drain()
        run = get_run(run_id)
    assert run.state == "failed" and "the account is closed" in (run.error or "")
    assert queue.messages[0].statuses == [489]


@pytest.mark.parametrize(
    ("result", "code"),
    [({1, 2}, "workflow_result_not_json"), (float("nan"), "workflow_result_not_json"),
     ("x" * 2000, "workflow_result_too_large")],
)  # fmt: skip
def test_a_result_that_cannot_be_stored_fails_the_run_clearly(
    make_app: Any, registry: JobRegistry, result: Any, code: str
) -> None:
    @workflow("odd", registry=registry)
    def odd(ctx: Any, payload: Any) -> None:
        ctx.run("odd", lambda: result)

    app, queue = make_app(WORKFLOW_MAX_RESULT_BYTES=1000)
    with app.app_context():
        run_id = odd.start()
        queue.drain()
        assert get_run(run_id).state == "failed"
    (statuses,) = [m.statuses for m in queue.messages]
    assert statuses == [489]


def test_a_cancelled_run_stops_where_it_waits(
    make_app: Any, registry: JobRegistry, effects: Effects
) -> None:
    onboard = onboarding(registry, effects)
    app, queue = make_app()
    with app.app_context():
        run_id = onboard.start({"email": "a@example.com"})
        deliver_due(queue)
        assert cancel(run_id) is True
        assert cancel(run_id) is False
        queue.drain(fail_fast=True)
        assert get_run(run_id).state == "cancelled"
        with pytest.raises(UnknownRun):
            cancel("no-such-run")
    assert effects.counts() == {"create": 1}


def test_steps_run_inline_until_the_budget_then_one_per_delivery(
    make_app: Any, registry: JobRegistry
) -> None:
    @workflow("chain", registry=registry)
    def chain(ctx: Any, payload: Any) -> int:
        return sum(ctx.run(f"s{n}", lambda n=n: n) for n in range(10))

    for budget, deliveries in ((5.0, 1), (0, 10)):
        app, queue = make_app(WORKFLOW_STEP_BUDGET=budget)
        with app.app_context():
            run_id = chain.start(run_id=f"budget-{budget}")
            queue.drain(fail_fast=True)
            assert get_run(run_id).output == "45"
        assert len(queue.messages) == deliveries


def test_a_sleep_longer_than_one_message_can_wait_is_chained(
    make_app: Any, registry: JobRegistry
) -> None:
    @workflow("long-nap", registry=registry)
    def long_nap(ctx: Any, payload: Any) -> str:
        ctx.sleep("month", "30d")
        return "awake"

    app, queue = make_app(WORKFLOW_MAX_DELAY=7 * DAY)
    with app.app_context():
        started = queue.clock
        run_id = long_nap.start()
        queue.drain(fail_fast=True)
        assert get_run(run_id).output == '"awake"'
    timers = queue.messages[1:]
    assert len(timers) == 5  # 7 + 7 + 7 + 7 + 2 days
    assert all(m.due - started <= 30 * DAY + 1 for m in timers)
    assert timers[-1].due - started >= 30 * DAY


def test_the_run_limits_hold(make_app: Any, registry: JobRegistry) -> None:
    @workflow("endless", registry=registry)
    def endless(ctx: Any, payload: Any) -> None:
        number = 0
        while True:
            ctx.run(f"s{number}", lambda: None)
            number += 1

    app, queue = make_app(WORKFLOW_MAX_STEPS=50)
    with app.app_context():
        run_id = endless.start()
        queue.drain()
        run = get_run(run_id)
    assert run.state == "failed" and "WORKFLOW_MAX_STEPS" in (run.error or "")
    assert len(run.steps) == 50


def test_a_delivery_for_an_unknown_run_is_refused(make_app: Any, registry: JobRegistry) -> None:
    onboarding(registry, Effects())
    app, _ = make_app()
    response = DeliveryClient(app).deliver("onboard", body=b"", query="run=nope&step=3")
    assert response.status_code == 489
    assert response.json["code"] == "unknown_run"


def test_a_busy_run_drops_other_pokes_but_not_its_holders_retry(
    make_app: Any, registry: JobRegistry, app_factory: Any = None
) -> None:
    inside: list[Any] = []

    @workflow("busy", registry=registry)
    def busy(ctx: Any, payload: Any) -> None:
        ctx.run("look", lambda: inside.append(client_calls()))

    app, queue = make_app()
    client = DeliveryClient(app)

    def client_calls() -> tuple[int, int]:
        other = client.deliver("busy", body=b"", query="run=r&step=0", message_id="msg_other")
        mine = client.deliver("busy", body=b"", query="run=r&step=0", message_id="msg_holder")
        return other.status_code, mine.status_code

    with app.app_context():
        response = client.deliver("busy", None, query="run=r", message_id="msg_holder")
    assert response.status_code == 200
    # The guard answers the holder's own retry first (503: same message, claim held).
    assert inside == [(200, 503)]


def _app(make_app: Any) -> Flask:
    app: Flask = make_app()[0]
    return app


def test_check_expiries_deletes_old_finished_runs_and_events_only(
    make_app: Any, registry: JobRegistry, effects: Effects
) -> None:
    from jobs.cron import expire_workflow_runs

    onboard = onboarding(registry, effects)

    @workflow("quick", registry=registry)
    def quick(ctx: Any, payload: Any) -> int:
        return 1

    app, queue = make_app(WORKFLOW_RETENTION_DAYS=30, WORKFLOW_EVENT_RETENTION_DAYS=7)
    with app.app_context():
        done = quick.start()
        live = onboard.start({"email": "a@example.com"})
        deliver_due(queue)
        notify("some-event", 1)
        engine = app.extensions["qstash_jobs.store"].engine
        assert expire_workflow_runs(engine, now_ms()) == 0
        assert expire_workflow_runs(engine, now_ms() + 31 * DAY * 1000) == 1
        assert [run.id for run in list_runs()] == [live]
        assert get_run(live).steps  # a live run keeps its steps, however old
        with pytest.raises(UnknownRun):
            get_run(done)
        from app.workflows import state

        assert state.latest_event(engine, "some-event", 0) is None  # older than 7 days


def test_a_run_id_sent_to_another_workflow_is_refused(make_app: Any, registry: JobRegistry) -> None:
    @workflow("one", registry=registry)
    def one(ctx: Any, payload: Any) -> None:
        ctx.sleep("nap", "1h")

    @workflow("two", registry=registry)
    def two(ctx: Any, payload: Any) -> None:
        ctx.run("other", lambda: 1)

    app, queue = make_app()
    with app.app_context():
        run_id = one.start(run_id="shared")
        deliver_due(queue)
    client = DeliveryClient(app)
    for query in (f"run={run_id}", f"run={run_id}&step=0", f"run={run_id}&step=0&branch=0"):
        response = client.deliver("two", {}, query=query)
        assert response.status_code == 489, query
        assert "belongs to workflow 'one'" in response.json["message"]
    with app.app_context():
        queue.drain(fail_fast=True)
        assert get_run(run_id).state == "completed"


def test_steps_cannot_be_nested(make_app: Any, registry: JobRegistry) -> None:
    @workflow("nested", registry=registry)
    def nested(ctx: Any, payload: Any) -> None:
        ctx.run("outer", lambda: ctx.run("inner", lambda: 1))

    app, queue = make_app()
    with app.app_context():
        run_id = nested.start()
        queue.drain()
        run = get_run(run_id)
    assert run.state == "failed" and "cannot be nested" in (run.error or "")


def test_a_replay_that_returns_before_the_recorded_steps_fails(
    make_app: Any, registry: JobRegistry
) -> None:
    replays = iter([3, 1])

    @workflow("shrinking", registry=registry)
    def shrinking(ctx: Any, payload: Any) -> None:
        ctx.run("a", lambda: 1)
        if next(replays) > 1:
            ctx.run("b", lambda: 2)
            ctx.sleep("nap", 60)

    app, queue = make_app()
    with app.app_context():
        run_id = shrinking.start()
        queue.drain()
        run = get_run(run_id)
    assert run.state == "failed"
    assert "returned after 1 steps, but the run recorded 'b' (run) at position 1" in (
        run.error or ""
    )


def test_a_notification_without_data_is_not_read_as_a_timeout(
    make_app: Any, registry: JobRegistry
) -> None:
    @workflow("told", registry=registry)
    def told(ctx: Any, payload: Any) -> bool:
        return ctx.wait_for_event("wait", "poke", timeout="1d") is not None

    app, queue = make_app()
    with app.app_context():
        run_id = told.start()
        deliver_due(queue)
        notify("poke")
        queue.drain(fail_fast=True)
        assert get_run(run_id).output == "true"


def test_branches_lost_to_a_failed_publish_are_published_by_the_retry(
    make_app: Any, registry: JobRegistry, effects: Effects
) -> None:
    @workflow("fan", registry=registry)
    def fan(ctx: Any, payload: Any) -> list[Any]:
        return ctx.parallel(*[(f"b{n}", effects, f"b{n}", n) for n in range(3)])

    app, queue = make_app()
    send = queue.send
    failures = iter([False, True])  # the second branch's publish fails, once

    def flaky_send(message: Any) -> Any:
        if "branch=" in message.destination and next(failures, False):
            raise ConnectionError("QStash unreachable")
        return send(message)

    queue.send = flaky_send  # type: ignore[method-assign]
    with app.app_context():
        run_id = fan.start()
        queue.drain()
        run = get_run(run_id)
    assert run.state == "completed", run.error
    assert run.output == "[0,1,2]"
    assert effects.counts() == {"b0": 1, "b1": 1, "b2": 1}


@pytest.mark.parametrize("name", ["", "a\x00b", "tab\there", "x" * 201, "\ud800", 7])
def test_names_the_store_cannot_keep_fail_the_run_clearly(
    make_app: Any, registry: JobRegistry, name: Any
) -> None:
    @workflow("named", registry=registry)
    def named(ctx: Any, payload: Any) -> None:
        ctx.run(name, lambda: 1)

    app, queue = make_app()
    with app.app_context():
        run_id = named.start()
        queue.drain()
        run = get_run(run_id)
        assert run.state == "failed"
        assert "a step's name must be a string of 1 to 200 characters" in (run.error or "")
        with pytest.raises(NonRetryableError, match="an event id is 1 to 200 printable"):
            notify(name)


def test_a_resume_that_cannot_be_published_still_resumes_the_other_runs(
    make_app: Any, registry: JobRegistry
) -> None:
    from app.workflows.engine import NotifyIncomplete

    @workflow("waits", registry=registry)
    def waits(ctx: Any, payload: Any) -> Any:
        return ctx.wait_for_event("wait", "go", timeout="1d")

    app, queue = make_app()
    send = queue.send
    refused = iter([True])

    def flaky_send(message: Any) -> Any:
        if "step=0" in message.destination and next(refused, False):
            raise ConnectionError("QStash unreachable")
        return send(message)

    with app.app_context():
        ids = [waits.start(n) for n in range(3)]
        deliver_due(queue)
        queue.send = flaky_send  # type: ignore[method-assign]
        with pytest.raises(NotifyIncomplete) as raised:
            notify("go", 1)
        assert sorted(raised.value.resumed) == sorted(ids)
        assert len(raised.value.unpublished) == 1
        deliver_due(queue)  # the two published resumes
        states = sorted(get_run(i).state for i in ids)
        assert states == ["completed", "completed", "waiting"]
        queue.drain(fail_fast=True)  # the third goes on at its timeout's delivery, with the event
        assert [get_run(i).output for i in ids] == ["1", "1", "1"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_an_input_the_receiver_would_refuse_is_refused_at_start(
    make_app: Any, registry: JobRegistry, bad: float
) -> None:
    from app.jobs import Job

    @workflow("numbers", registry=registry)
    def numbers(ctx: Any, payload: Any) -> Any:
        return payload

    app, queue = make_app()
    plain = registry.add(Job("plain", lambda payload, delivery: None))
    with app.app_context():
        with pytest.raises(ValueError, match="not JSON-serialisable"):
            numbers.start({"x": bad})
        with pytest.raises(ValueError, match="not JSON-serialisable"):
            plain.enqueue({"x": bad})
    assert queue.messages == []


def test_timers_go_around_the_workflows_queue(make_app: Any, registry: JobRegistry) -> None:
    @workflow("queued", registry=registry, queue="wf-queue")
    def queued(ctx: Any, payload: Any) -> None:
        ctx.run("a", lambda: 1)
        ctx.sleep("nap", "1d")
        ctx.parallel(("x", lambda: 1), ("y", lambda: 2))

    app, queue = make_app()
    with app.app_context():
        run_id = queued.start()
        queue.drain(fail_fast=True)
        assert get_run(run_id).state == "completed"
    by_kind = [(m.message.queue, "&branch=" in m.message.destination) for m in queue.messages]
    timers = [m for m in queue.messages if m.message.options.not_before is not None]
    assert [m.message.queue for m in timers] == [None]
    assert by_kind.count(("wf-queue", True)) == 2  # the branches keep the queue
    assert queue.messages[0].message.queue == "wf-queue"  # so does the start


def test_a_runs_lease_is_the_duplicate_guards_lease(make_app: Any, registry: JobRegistry) -> None:
    """Both leases follow one rule (the longer of DUPLICATE_LEASE_SECONDS and the timeout
    + 30 s): a run's lease never ends before the claim on the delivery holding it."""
    seen: list[int] = []

    def lease_left(run_id: str) -> int:
        run = get_run(run_id)
        return (run.lease_until_ms or 0) - now_ms()

    for timeout, expected in (("10s", 150), ("200s", 230)):
        name = f"leased-{timeout[:-1]}"

        @workflow(name, registry=registry, timeout=timeout)
        def leased(ctx: Any, payload: Any) -> None:
            ctx.run("look", lambda: seen.append(lease_left(ctx.run_id)))

        app, queue = make_app(DUPLICATE_LEASE_SECONDS=150)
        with app.app_context():
            leased.start()
            queue.drain(fail_fast=True)
            job = app.extensions["qstash_jobs"][name]
            assert job.lease_seconds(150) == expected
        assert expected * 1000 - 5000 < seen[-1] <= expected * 1000


def test_a_wait_takes_only_an_event_id_that_can_be_notified(
    make_app: Any, registry: JobRegistry
) -> None:
    """One rule for event ids everywhere: a run never waits for an id that the HTTP
    endpoint or the CLI would refuse to notify (here a no-break space)."""

    @workflow("odd-wait", registry=registry)
    def odd_wait(ctx: Any, payload: Any) -> Any:
        return ctx.wait_for_event("wait", "user\u00a0confirmed", timeout="1d")

    app, queue = make_app()
    with app.app_context():
        run_id = odd_wait.start()
        queue.drain()
        run = get_run(run_id)
        with pytest.raises(NonRetryableError, match="an event id is 1 to 200 printable"):
            notify("user\u00a0confirmed")
    assert run.state == "failed" and "printable characters" in (run.error or "")
