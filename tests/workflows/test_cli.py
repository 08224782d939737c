"""``flask workflows …``: start, list, show, cancel, notify, resume; one clear line on errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import Result
from flask import Flask

from app.cli import workflows
from app.jobs import JobRegistry
from app.testing import DeliveryClient, StubQueue
from app.workflows import get_run, workflow
from tests.workflows.runs import declare, deliver_due

App = tuple[Flask, StubQueue]


@pytest.fixture
def app(make_app: Callable[..., App], registry: JobRegistry) -> App:
    declare(registry)
    return make_app()


def cli(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(workflows, list(args))


def one_error_line(result: Result, status: int = 1) -> str:
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
    [line] = [line for line in result.output.strip().splitlines() if line.startswith("Error")]
    return line


def started(app: App, order: str = "o-1", *, advance: float = 0.0) -> str:
    """Start an ``order`` run through the CLI and deliver what is due; return its id."""
    flask_app, queue = app
    result = cli(flask_app, "start", "order", json.dumps({"order": order, "qty": 2}))
    assert result.exit_code == 0, result.output
    deliver_due(flask_app, queue)
    if advance:
        deliver_due(flask_app, queue, advance=advance)
    return result.output.strip()


def run_of(app: App, run_id: str) -> Any:
    with app[0].app_context():
        return get_run(run_id)


def test_start_prints_the_run_id_and_the_run_goes(app: App) -> None:
    """start validates, publishes and prints the run id; the run then sleeps at step 1."""
    run_id = started(app)
    assert run_id.startswith("wfr_")
    run = run_of(app, run_id)
    assert (run.state, run.position) == ("waiting", 2)
    assert run.waiting_for.startswith("sleep cool-off")


def test_start_with_a_run_id_is_idempotent(app: App) -> None:
    """--run-id names the run; starting the same id again starts nothing new."""
    flask_app, queue = app
    for _ in range(2):
        result = cli(flask_app, "start", "order", '{"order": "o-2"}', "--run-id", "order-o-2")
        assert result.output.strip() == "order-o-2"
    assert len(queue.messages) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "{}"], "no workflow named 'nope' (workflows: order)"),
        (["plain", "{}"], "no workflow named 'plain'"),
        (["order", "{not json"], "PAYLOAD is not valid JSON"),
        (["order", '{"qty": 1}'], 'invalid payload: {"order"'),
        (["order", '{"order": "x"}', "--run-id", "has space"], "a run id is 1 to 200"),
    ],
)
def test_start_errors_are_one_line(app: App, args: list[str], message: str) -> None:
    """Unknown workflow, bad JSON, a schema failure, a bad run id: exit 1, nothing published."""
    flask_app, queue = app
    assert message in one_error_line(cli(flask_app, "start", *args))
    assert queue.messages == []


def test_list_shows_runs_newest_first_and_filters(app: App) -> None:
    """list prints one line per run (id, workflow, state, what it waits for), filtered."""
    first = started(app, "o-1")
    second = started(app, "o-2", advance=3601)  # wakes the first too: both wait for events
    cli(app[0], "cancel", first)
    lines = cli(app[0], "list").output.splitlines()
    assert [line.split()[0] for line in lines] == [second, first]
    assert lines[0].split()[1:3] == ["order", "waiting"]
    assert "event paid:o-2" in lines[0]
    assert cli(app[0], "list", "--state", "cancelled").output.split()[0] == first
    assert cli(app[0], "list", "--limit", "1").output.split()[0] == second
    assert cli(app[0], "list", "--workflow", "other").output.strip() == "no runs"


def test_list_refuses_an_unknown_state(app: App) -> None:
    """--state takes only the states a run can be in (a usage error, exit 2)."""
    result = cli(app[0], "list", "--state", "sleeping")
    assert result.exit_code == 2 and "'sleeping' is not one of" in result.output


def test_show_prints_each_step_and_the_current_wait(app: App) -> None:
    """show: the run, then position, name, kind, state, duration, attempts, result."""
    run_id = started(app, advance=3601)
    output = cli(app[0], "show", run_id).output
    assert f"run {run_id}  workflow order  waiting" in output
    assert 'input: {"order":"o-1","qty":2}' in output
    assert "waiting for: event paid:o-1" in output
    lines = output.splitlines()
    [price] = [line for line in lines if " price " in line]
    assert price.split()[:4] == ["0", "price", "run", "done"]
    assert "attempts=1" in price and '-> {"total":6,"note":"o-1"}' in price
    [sleep] = [line for line in lines if "cool-off" in line]
    assert sleep.split()[:4] == ["1", "cool-off", "sleep", "done"] and "(wake " in sleep
    [paid] = [line for line in lines if " paid " in line]
    assert paid.split()[:5] == ["2", "paid", "event", "waiting", "-"]
    assert "(event paid:o-1 (timeout " in paid


def test_show_lists_parallel_branches_under_their_step(app: App) -> None:
    """A finished run shows its output and each branch indented under the parallel step."""
    flask_app, queue = app
    run_id = started(app, advance=3601)
    assert cli(flask_app, "notify", "paid:o-1", '{"card": true}').output.strip() == run_id
    deliver_due(flask_app, queue)
    output = cli(flask_app, "show", run_id).output
    assert f"run {run_id}  workflow order  completed" in output
    assert '"done":["shipped","mailed"]' in output
    assert "\n    3.0   ship  run  done" in output and "\n    3.1   mail  run  done" in output


def test_show_a_failed_run_names_its_step_and_error(app: App) -> None:
    """A run failed for good shows the failing step and the error."""
    flask_app, _ = app
    run_id = started(app, "fail-1")
    output = cli(flask_app, "show", run_id).output
    assert f"run {run_id}  workflow order  failed" in output
    assert "failed at step refuse: NonRetryableError: <b>no</b> stock" in output


def test_show_an_unknown_run(app: App) -> None:
    """show of an id no run has: exit 1, one line."""
    assert "no workflow run 'wfr_nope'" in one_error_line(cli(app[0], "show", "wfr_nope"))


def test_cancel_stops_a_waiting_run_once(app: App) -> None:
    """cancel ends a live run; cancelling it again, or an unknown run, is an error."""
    run_id = started(app)
    assert cli(app[0], "cancel", run_id).output.strip() == f"cancelled {run_id}"
    assert run_of(app, run_id).state == "cancelled"
    again = one_error_line(cli(app[0], "cancel", run_id))
    assert f"run {run_id} has finished already (cancelled)" in again
    assert "no workflow run 'wfr_nope'" in one_error_line(cli(app[0], "cancel", "wfr_nope"))


def test_notify_resumes_the_waiting_run(app: App) -> None:
    """notify prints each run it resumed; the run gets the data."""
    flask_app, queue = app
    run_id = started(app, advance=3601)
    assert cli(flask_app, "notify", "paid:o-1", "[1, 2]").output.strip() == run_id
    deliver_due(flask_app, queue)
    run = run_of(app, run_id)
    assert run.state == "completed" and json.loads(run.output)["paid"] == [1, 2]


def test_notify_without_data_resumes_with_an_empty_object(app: App) -> None:
    """No DATA is no data: the wait returns {} (as from notify(id)), not None."""
    flask_app, queue = app
    run_id = started(app, advance=3601)
    assert cli(flask_app, "notify", "paid:o-1").output.strip() == run_id
    deliver_due(flask_app, queue)
    assert json.loads(run_of(app, run_id).output)["paid"] == {}


def test_notify_without_a_waiting_run_says_the_event_is_kept(app: App) -> None:
    """An event nobody waits for yet: a clear line, exit 0."""
    result = cli(app[0], "notify", "paid:nobody")
    assert result.exit_code == 0
    assert "no run is waiting for paid:nobody; the event is kept 7 days" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["paid:o-1", "{oops"], "DATA is not valid JSON"),
        (["", "{}"], "an event id is 1 to 200 printable characters, not ''"),
        (["x" * 201, "{}"], "an event id is 1 to 200 printable characters"),
        (["a\tb"], "an event id is 1 to 200 printable characters, not 'a\\tb'"),
    ],
)
def test_notify_errors_are_one_line(app: App, args: list[str], message: str) -> None:
    """Bad JSON or a bad event id: exit 1, one line, nothing published."""
    flask_app, queue = app
    assert message in one_error_line(cli(flask_app, "notify", *args))
    assert queue.messages == []


def test_resume_publishes_a_delivery_that_drives_the_run(app: App) -> None:
    """resume prints the message id of the delivery it published for a live run."""
    flask_app, queue = app
    run_id = started(app)
    result = cli(flask_app, "resume", run_id)
    assert result.exit_code == 0, result.output
    [message] = [m for m in queue.messages if m.message_id == result.output.strip()]
    assert f"run={run_id}&step=1" in message.message.destination  # the sleep's position


def test_resume_wakes_a_sleep_whose_timer_was_lost(app: App) -> None:
    """A run asleep whose timer message is gone (DLQ'd, purged) gets a new timer on resume."""
    flask_app, queue = app
    run_id = started(app)
    for message in queue.pending:
        message.state = "failed"  # the timer is lost
    deliver_due(flask_app, queue, advance=600)  # someone notices, later
    assert cli(flask_app, "resume", run_id).exit_code == 0
    deliver_due(flask_app, queue)
    deliver_due(flask_app, queue, advance=3601)
    assert run_of(app, run_id).waiting_for.startswith("event paid:o-1")


def test_resume_republishes_lost_parallel_branches(app: App) -> None:
    """A run waiting for branches whose messages are gone finishes after resume."""
    flask_app, queue = app
    run_id = started(app, advance=3601)
    assert cli(flask_app, "notify", "paid:o-1").exit_code == 0
    step = [m for m in queue.pending if m.due <= queue.clock]
    [poke] = step
    _, _, query = poke.message.destination.partition("?")
    DeliveryClient(flask_app).deliver("order", message_id=poke.message_id, query=query)
    poke.state = "delivered"
    branches = [m for m in queue.pending if "branch=" in m.message.destination]
    assert len(branches) == 2
    for message in branches:
        message.state = "failed"  # the branch messages are lost
    deliver_due(flask_app, queue, advance=600)
    assert run_of(app, run_id).state == "waiting"
    assert cli(flask_app, "resume", run_id).exit_code == 0
    deliver_due(flask_app, queue)
    assert run_of(app, run_id).state == "completed"


def test_resume_refuses_unknown_and_finished_runs(app: App) -> None:
    """Nothing to resume: an unknown run, or one that has finished."""
    run_id = started(app)
    cli(app[0], "cancel", run_id)
    assert "has finished (cancelled)" in one_error_line(cli(app[0], "resume", run_id))
    assert "no workflow run 'wfr_nope'" in one_error_line(cli(app[0], "resume", "wfr_nope"))


def test_without_the_store_every_command_says_why(
    make_app: Callable[..., App], registry: JobRegistry
) -> None:
    """With the store off, commands that read runs fail with one line naming DATABASE_URL."""
    declare(registry)
    flask_app, _ = make_app(DELIVERY_LOG=False, DUPLICATE_GUARD=False)
    for args in (["list"], ["show", "wfr_x"], ["cancel", "wfr_x"], ["notify", "e"]):
        assert "set DATABASE_URL" in one_error_line(cli(flask_app, *args))


def test_jobs_list_shows_a_workflow_and_its_input_fields(app: App) -> None:
    """`flask jobs list` names a workflow as one and lists its input's fields, not 'any JSON'."""
    from app.cli import jobs

    result = app[0].test_cli_runner().invoke(jobs, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("order "))
    assert "(workflow" in lines[at]
    assert any("payload: order (String, required)" in line for line in lines[at : at + 4])


def test_show_reads_a_big_run_in_bounded_pages(
    make_app: Callable[..., App], registry: JobRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of many big results is shown page by page, each text cut by the database: the
    whole run (every result, up to WORKFLOW_MAX_RESULT_BYTES each) is never loaded."""
    import app.cli as cli_module
    from app.workflows import state

    @workflow("bulky", registry=registry)
    def bulky(ctx: Any, payload: Any) -> None:
        for number in range(7):
            ctx.run(f"s{number}", lambda: "x" * 100_000)
        ctx.parallel(("a", lambda: "y" * 100_000), ("b", lambda: "z"))

    flask_app, queue = make_app()
    with flask_app.app_context():
        run_id = bulky.start({"blob": "i" * 100_000})
        queue.drain(fail_fast=True)

    def whole_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the whole run was loaded")

    monkeypatch.setattr(state, "get", whole_run)
    monkeypatch.setattr(cli_module, "STEP_PAGE", 3)  # pages of 3 rows, never splitting 7.*
    result = cli(flask_app, "show", run_id)
    assert result.exit_code == 0, result.output
    labels = [line.split()[0] for line in result.output.splitlines() if line.startswith(" ")]
    steps = [label for label in labels if label[0].isdigit()]
    assert steps == ["0", "1", "2", "3", "4", "5", "6", "7", "7.0", "7.1"]
    assert max(len(line) for line in result.output.splitlines()) < 400
