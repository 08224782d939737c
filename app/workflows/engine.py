"""The workflow engine: what one delivery to a workflow's endpoint does.

A delivery carries only where to go on, in its (signed) URL's query:

- no ``step``: **start** the run ``run`` (default: one derived from the message id), the
  body being its input; a run that exists already is simply driven on;
- ``step=n``: **drive** the run on (a timer, an event, a finished branch, a hand-off);
- ``step=n&branch=b``: **run branch** ``b`` of the parallel step ``n``.

Driving takes the run's lease (one delivery at a time executes its main line), replays
the workflow function from the top with the recorded steps, and runs new steps inline
until the function returns, waits (sleep, event, parallel) or has used
``WORKFLOW_STEP_BUDGET`` seconds, when it publishes a delivery to go on. Whether a wait
has ended is read from the store (a sleep's time passed, an event's row, every branch
done), never from which message arrived: a delivery that finds the lease held by another
answers 200 and drops itself, because the holder looks again after giving the lease up.
Only a retry of the holder's own message (its worker died) is told to come back later.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from flask import current_app
from marshmallow import ValidationError
from sqlalchemy import Engine

from app.errors import ConfigurationError, NonRetryableError, QStashJobsError, RetryLater
from app.payload import schema_error
from app.publishing.client import current_publisher
from app.publishing.jobs import _app_url, validate_payload
from app.qstash.client.options import Message, PublishOptions
from app.store import get_store
from app.workflows import state
from app.workflows.context import (
    BranchCall,
    Context,
    Handoff,
    Suspend,
    Wait,
    check_event_id,
    encode,
)
from app.workflows.definition import RunFailure
from app.workflows.state import Lease, LeaseLost

if TYPE_CHECKING:
    from app.delivery import Delivery
    from app.workflows.definition import Workflow

__all__ = ["cancel", "deliver", "notify", "start"]

logger = logging.getLogger(__name__)

#: QStash's default number of retries, when a workflow declares none.
DEFAULT_RETRIES = 3
#: A run id: what start() accepts and a URL query carries.
RUN_ID_LIMIT = 200


class UnknownRun(LookupError):
    """No run has this id (never started, or expired)."""


def store_engine() -> Engine:
    """The app store's engine; workflows keep their state there."""
    store = get_store(current_app)
    if store is None:
        raise ConfigurationError(
            "workflows keep their runs in the store, which is off: set DATABASE_URL (tests"
            " without one turn the store off) and leave DELIVERY_LOG or DUPLICATE_GUARD on"
        )
    return store.engine


def _config(name: str) -> Any:
    return current_app.config[name]


def _lease_ms(workflow: Workflow) -> int:
    # The duplicate guard's own rule: a run's lease never ends before its delivery's claim.
    return int(workflow.lease_seconds(float(_config("DUPLICATE_LEASE_SECONDS"))) * 1000)


def _now() -> float:
    # The stub queue (app.testing) runs a virtual clock: a 3-day sleep passes at once.
    clock = getattr(current_publisher(), "clock", None)
    return float(clock) if isinstance(clock, (int, float)) else time.time()


def check_run_id(run_id: Any) -> str:
    if (
        not isinstance(run_id, str)
        or not 0 < len(run_id) <= RUN_ID_LIMIT
        or not run_id.isascii()
        or not all(c.isalnum() or c in "-_.:" for c in run_id)
    ):
        raise ValueError(
            f"a run id is 1 to {RUN_ID_LIMIT} ASCII letters, digits, '-', '_', '.' or ':',"
            f" not {run_id!r:.80}"
        )
    return run_id


# --- publishing ---------------------------------------------------------------------------


def _publish(
    workflow: Workflow,
    query: dict[str, Any],
    *,
    body: bytes = b"",
    dedup: str | None = None,
    at: float | None = None,
    **options: Any,
) -> str:
    base = _app_url(None)
    url = workflow.url(base) + "?" + urlencode({k: v for k, v in query.items() if v is not None})
    if at is not None:
        now = _now()
        at = min(at, now + int(_config("WORKFLOW_MAX_DELAY")))  # longer sleeps are chained
        options.setdefault("not_before", max(int(now), int(at + 0.999)))
    publish = PublishOptions(
        content_type="application/json",
        retries=workflow.retries,
        retry_delay=workflow.retry_delay,
        timeout=workflow.timeout,
        deduplication_id=dedup,
        **options,
    )
    # A timer goes around the workflow's queue: a queue delivers in order, so a message
    # due in three days must not stand in it (nor be held behind others when it is due).
    queue = None if at is not None else workflow.queue
    return current_publisher().send(Message(url, body, publish, queue)).message_id


def start(workflow: Workflow, payload: Any, *, run_id: str | None, **options: Any) -> str:
    """Validate ``payload`` and publish the delivery that starts a run; return the run id."""
    run_id = check_run_id(run_id) if run_id is not None else f"wfr_{uuid.uuid4().hex}"
    try:
        _load_input(workflow, payload)
    except ValidationError as exc:
        exc.add_note(f"workflow {workflow.name!r}: no run was started")
        raise
    body = validate_payload(workflow, payload)  # JSON (the workflow's job has no schema)
    query = {"run": run_id, "at": state.now_ms()}
    _publish(workflow, query, body=body, dedup=f"wf-start.{run_id}", **options)
    return run_id


# --- one delivery ------------------------------------------------------------------------


class Execution:
    """One delivery's work on one run: the lease, the clock, the budget."""

    def __init__(
        self,
        workflow: Workflow,
        engine: Engine,
        lease: Lease,
        delivery: Delivery,
        *,
        poke_step: int | None = None,
        branch_target: tuple[int, int] | None = None,
    ) -> None:
        self.workflow = workflow
        self.engine = engine
        self.lease = lease
        self.delivery = delivery
        self.poke_step = poke_step
        self.branch_target = branch_target
        self.started = time.monotonic()
        self.budget = float(_config("WORKFLOW_STEP_BUDGET"))
        self.max_steps = int(_config("WORKFLOW_MAX_STEPS"))
        self.result_limit = int(_config("WORKFLOW_MAX_RESULT_BYTES"))
        self.new_steps = 0
        self.created_wait: int | None = None
        self.current_step: str | None = None
        #: What stopped this delivery inside a step (the step's error, a lost lease): the
        #: workflow may catch it, but its next step call or its return raises it again.
        self.failed: BaseException | None = None
        self._clock = _now()
        self._clock_at = time.monotonic()

    def now(self) -> float:
        return self._clock + (time.monotonic() - self._clock_at)

    @contextmanager
    def _stops_the_run(self) -> Iterator[None]:
        # What fails in a step or its record (the step's error, a lost lease, the store)
        # stops this delivery even if the workflow function catches it: it is noted here
        # and raised again at the function's next step or return.
        try:
            yield
        except BaseException as exc:
            self.failed = exc
            raise

    def check_step_count(self, position: int) -> None:
        if position >= self.max_steps:
            raise NonRetryableError(
                f"the run reached WORKFLOW_MAX_STEPS ({self.max_steps} steps)",
                code="workflow_too_many_steps",
            )

    def _may_start_step(self, position: int) -> None:
        # Each delivery runs at least one new step. After that it hands over when its time
        # is used, or at once when it is a retry: each step then gets a fresh message and
        # with it the workflow's whole retry budget.
        if self.new_steps and (
            self.delivery.retried > 0 or time.monotonic() - self.started >= self.budget
        ):
            raise Suspend(Handoff(position))

    def execute(self, position: int, name: str, kind: str, call: Callable[[], Any]) -> Any:
        """Run a new step and record its result; return the result as a replay will."""
        self._may_start_step(position)
        self.current_step = name
        started = state.now_ms()
        with self._stops_the_run():
            text = encode(call(), f"the result of step {name!r}", self.result_limit)
            step = {
                "position": position,
                "name": name,
                "kind": kind,
                "state": "done",
                "result": text,
                "started_ms": started,
                "finished_ms": state.now_ms(),
                "attempts": self.delivery.retried + 1,
            }
            state.record(self.engine, self.lease, step, position=position + 1)
        self.new_steps += 1
        self.current_step = None
        return json.loads(text)

    def record_wait(
        self,
        position: int,
        name: str,
        kind: str,
        *,
        wake_ms: int,
        event_id: str | None = None,
        done: bool = False,
    ) -> None:
        now = state.now_ms()
        step = {
            "position": position,
            "name": name,
            "kind": kind,
            "state": "done" if done else "waiting",
            "started_ms": now,
            "finished_ms": now if done else None,
            "wake_ms": wake_ms,
            "event_id": event_id,
        }
        with self._stops_the_run():
            state.record(self.engine, self.lease, step, position=position + 1)
        if not done:
            self.created_wait = position

    def record_parallel(self, position: int, name: str, branches: list[str]) -> None:
        self._may_start_step(position)
        parent = {
            "position": position,
            "name": name,
            "kind": "parallel",
            "state": "waiting",
            "started_ms": state.now_ms(),
        }
        with self._stops_the_run():
            state.record_parallel(self.engine, self.lease, parent, branches, position=position + 1)
        self.created_wait = position


def _params(delivery: Delivery) -> tuple[str | None, int | None, int | None, int | None]:
    query = parse_qs(urlsplit(delivery.url).query, keep_blank_values=True)

    def one(name: str, convert: Callable[[str], Any]) -> Any:
        values = query.get(name)
        if not values:
            return None
        try:
            return convert(values[0])
        except ValueError as exc:
            raise NonRetryableError(
                f"bad workflow {name}: {exc}", code="bad_workflow_url"
            ) from None

    def digits(most: int, what: str) -> Callable[[str], int]:
        def parse(text: str) -> int:
            if not text.isascii() or not text.isdigit() or len(text) > most:
                raise ValueError(f"{text!r:.20} is not {what}")
            return int(text)

        return parse

    position = digits(9, "a step number")
    return (
        one("run", check_run_id),
        one("step", position),
        one("branch", position),
        one("at", digits(15, "a time in milliseconds")),
    )


def _load_input(workflow: Workflow, payload: Any) -> Any:
    """The run's input as the function gets it: ``payload`` loaded with the workflow's
    schema (no body: ``{}``, as for a job); raises marshmallow's ``ValidationError``."""
    if workflow.input_schema is None:
        return payload
    return workflow.input_schema.load({} if payload is None else payload)


def _start_input(workflow: Workflow, payload: Any) -> str:
    try:
        _load_input(workflow, payload)
    except ValidationError as exc:
        raise schema_error(exc) from None
    return encode(payload, "the run's input", 1 << 62)


def deliver(workflow: Workflow, payload: Any, delivery: Delivery) -> Any:
    """Answer one delivery to ``workflow``'s endpoint (see the module's docstring)."""
    run_id, step, branch, started_ms = _params(delivery)
    engine = store_engine()
    if run_id is None:
        run_id = _run_id_of(delivery.message_id)
    lease = Lease(run_id, secrets.token_hex(16), delivery.message_id, _lease_ms(workflow))
    if branch is not None:
        if step is None:
            raise NonRetryableError("a branch delivery needs its step", code="bad_workflow_url")
        return _run_branch(workflow, engine, lease, delivery, step, branch)
    if step is None:
        created = state.create(
            engine,
            run_id,
            workflow.name,
            _start_input(workflow, payload),
            lease,
            started_ms=started_ms,
        )
        if not created and not state.acquire(engine, lease):
            return _not_held(engine, run_id, delivery)
    elif not state.acquire(engine, lease):
        return _not_held(engine, run_id, delivery)
    return _drive(workflow, engine, lease, delivery, step)


def _run_id_of(message_id: str | None) -> str:
    """The run a plain publish to the endpoint starts: one per message id, so that its
    redelivery starts nothing new. The header is not signed and may hold anything: an id
    that cannot name a run is hashed."""
    if message_id is None:
        return f"wfr_{uuid.uuid4().hex}"
    try:
        return check_run_id(f"wfr_{message_id}")
    except ValueError:
        return f"wfr_{hashlib.sha256(message_id.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _not_held(engine: Engine, run_id: str, delivery: Delivery) -> dict[str, Any]:
    run = state.get(engine, run_id, with_steps=False)
    if run is None:
        raise NonRetryableError(f"no workflow run {run_id!r}", code="unknown_run")
    if run.finished:
        return {"run": run_id, "state": run.state}
    remaining = ((run.lease_until_ms or 0) - state.now_ms()) / 1000
    if remaining <= 0 or run.lease_message == delivery.message_id:
        # Free again already, or this is a retry of the holder's own message (its
        # worker died): come back when the lease has run out.
        raise RetryLater(f"workflow run {run_id} is busy", after=max(1.0, remaining))
    return {"run": run_id, "state": "busy"}


def _drive(
    workflow: Workflow, engine: Engine, lease: Lease, delivery: Delivery, poke: int | None
) -> Any:
    """Replay the run under ``lease`` until it finishes, waits or hands over."""
    while True:
        run = state.get(engine, lease.run_id)
        assert run is not None
        _check_workflow(workflow, run, engine, lease)
        execution = Execution(workflow, engine, lease, delivery, poke_step=poke)
        try:
            outcome = _replay(workflow, execution, run)
        except LeaseLost:
            return {"run": run.id, "state": "busy"}
        if not isinstance(outcome, Wait):
            return outcome
        if not _ready_again(engine, run, outcome, execution):
            return {"run": run.id, "state": "waiting", "waiting_for": outcome.waiting_for}
        # The wait ended while this delivery gave the lease up: go on if it is still free.
        if not state.acquire(engine, lease):
            return {"run": run.id, "state": "busy"}


def _check_workflow(
    workflow: Workflow, run: state.Run, engine: Engine, lease: Lease | None
) -> None:
    if run.workflow != workflow.name:  # a run id sent to another workflow's URL
        if lease is not None:
            state.release(engine, lease)
        raise NonRetryableError(
            f"run {run.id!r} belongs to workflow {run.workflow!r}, not {workflow.name!r}",
            code="unknown_run",
        )


def _replay(workflow: Workflow, execution: Execution, run: state.Run) -> Any:
    lease, engine = execution.lease, execution.engine
    if run.finished:
        state.release(engine, lease)
        return {"run": run.id, "state": run.state}
    try:
        payload = _loaded_input(workflow, run)
        context = Context(execution, run)
        output = workflow.function(context, payload)  # type: ignore[misc]
        if execution.failed is not None:  # the function caught it: it still stops here
            raise execution.failed
        context.check_finished()
        text = encode(output, "the workflow's result", execution.result_limit)
    except Suspend as suspended:
        return _suspended(workflow, execution, suspended.wait)
    except (LeaseLost, RetryLater):
        state.release(engine, lease)
        raise
    except NonRetryableError as exc:
        _fail(workflow, engine, lease, run, exc, execution.current_step)
        raise
    except Exception as exc:
        if execution.delivery.retried < _max_retries(workflow):
            state.release(engine, lease)
            raise  # 500: QStash retries the delivery, the replay retries the step
        _fail(workflow, engine, lease, run, exc, execution.current_step)
        raise NonRetryableError(
            f"workflow run {run.id} failed after {execution.delivery.retried + 1} attempts:"
            f" {type(exc).__name__}: {exc}",
            code="workflow_failed",
        ) from exc
    state.finish(engine, run.id, "completed", lease, output=text)
    return {"run": run.id, "state": "completed", "output": json.loads(text)}


def _loaded_input(workflow: Workflow, run: state.Run) -> Any:
    try:
        return _load_input(workflow, json.loads(run.input))
    except ValidationError as exc:  # the schema changed under a live run
        raise schema_error(exc) from None


def _max_retries(workflow: Workflow) -> int:
    return DEFAULT_RETRIES if workflow.retries is None else workflow.retries


def _suspended(workflow: Workflow, execution: Execution, wait: Wait | Handoff | BranchCall) -> Any:
    lease, engine, run_id = execution.lease, execution.engine, execution.lease.run_id
    if isinstance(wait, BranchCall):  # only a branch replay asks, and it holds no lease
        raise AssertionError("a main-line replay reached a branch call")
    if isinstance(wait, Handoff):
        # Give the lease up first: the next delivery may arrive at once.
        state.release(engine, lease, state="running", waiting_for=None)
        _publish(workflow, {"run": run_id, "step": wait.position})
        return {"run": run_id, "state": "running", "handed_over_at": wait.position}
    state.set_waiting(engine, lease, wait.waiting_for)
    # A delivery that published the branches (or the timer) once does so again only
    # when it is a retry (its first try may have failed halfway) or the timer's own poke.
    again = execution.delivery.retried > 0 or execution.poke_step == wait.position
    if wait.branches and (execution.created_wait == wait.position or again):
        for number in wait.branches:
            _publish(
                workflow,
                {"run": run_id, "step": wait.position, "branch": number},
                dedup=f"wf.{run_id}.{wait.position}.b{number}",
            )
    elif wait.timer_at is not None and (execution.created_wait == wait.position or again):
        _publish(
            workflow,
            {"run": run_id, "step": wait.position},
            at=wait.timer_at,
            dedup=f"wf.{run_id}.{wait.position}.t{int(wait.timer_at)}.{int(execution.now())}",
        )
    return wait


def _ready_again(engine: Engine, run: state.Run, wait: Wait, execution: Execution) -> bool:
    """After giving the lease up: has the wait ended meanwhile (then this delivery goes on)?"""
    run_id = run.id
    step = state.step_row(engine, run_id, wait.position)
    if step is None:
        return False
    if step.state == "done":
        return True
    if step.kind == "parallel":
        return all(row.state == "done" for row in state.branches(engine, run_id, wait.position))
    if step.kind == "event" and step.event_id is not None:
        if state.latest_event(engine, step.event_id, run.created_ms) is not None:
            return True
    return step.wake_ms is not None and execution.now() * 1000 >= step.wake_ms


def _fail(
    workflow: Workflow,
    engine: Engine,
    lease: Lease | None,
    run: state.Run,
    error: BaseException,
    step: str | None,
) -> None:
    message = f"{type(error).__name__}: {error}"[:2000]
    if not state.finish(engine, run.id, "failed", lease, error=message, failed_step=step):
        return  # finished already (another delivery, a cancel): nothing to report twice
    logger.warning("workflow run %s failed at step %s: %s", run.id, step, message)
    if workflow.on_failure is None:
        return
    failure = RunFailure(run.id, workflow.name, step, message, run.input)
    try:
        workflow.on_failure(failure)
    except Exception:
        logger.exception("the on_failure function of workflow %s raised", workflow.name)


# --- parallel branches -------------------------------------------------------------------


def _run_branch(
    workflow: Workflow,
    engine: Engine,
    lease: Lease,
    delivery: Delivery,
    position: int,
    branch: int,
) -> Any:
    run_id = lease.run_id
    run = state.get(engine, run_id)
    if run is None:
        raise NonRetryableError(f"no workflow run {run_id!r}", code="unknown_run")
    _check_workflow(workflow, run, engine, None)
    if run.finished:
        return {"run": run_id, "state": run.state}
    if not state.claim_branch(
        engine, run_id, position, branch, lease.token, delivery.message_id, lease.lease_ms
    ):
        row = state.step_row(engine, run_id, position, branch)
        if row is None:
            raise NonRetryableError(
                f"run {run_id} has no branch {branch} at step {position}", code="unknown_run"
            )
        if row.state == "done":
            return _join(workflow, engine, lease, delivery, position)
        if row.lease_message == delivery.message_id:
            remaining = ((row.lease_until_ms or 0) - state.now_ms()) / 1000
            raise RetryLater(f"branch {row.name} is running", after=max(1.0, remaining))
        return {"run": run_id, "state": "busy"}
    execution = Execution(workflow, engine, lease, delivery, branch_target=(position, branch))
    name: str | None = None  # the branch's, once the replay reached it
    try:
        call = _branch_call(workflow, execution, run)
        name = call.name
        text = encode(call.call(), f"the result of branch {name!r}", execution.result_limit)
    except BaseException as exc:
        state.end_branch(engine, run_id, position, branch, lease.token, None)
        _branch_failed(workflow, engine, run, exc, name, delivery)
        raise
    if not state.end_branch(engine, run_id, position, branch, lease.token, text):
        return {"run": run_id, "state": "busy"}  # its lease ran out and another took it
    return _join(workflow, engine, lease, delivery, position)


def _branch_call(workflow: Workflow, execution: Execution, run: state.Run) -> BranchCall:
    """Replay the run up to the parallel step whose branch this delivery runs."""
    try:
        workflow.function(Context(execution, run), _loaded_input(workflow, run))  # type: ignore[misc]
    except Suspend as suspended:
        assert isinstance(suspended.wait, BranchCall)
        return suspended.wait
    position, branch = execution.branch_target or (None, None)
    raise NonRetryableError(
        f"the replay for branch {branch} of step {position} finished without reaching it",
        code="workflow_nondeterministic",
    )


def _branch_failed(
    workflow: Workflow,
    engine: Engine,
    run: state.Run,
    exc: BaseException,
    name: str | None,
    delivery: Delivery,
) -> None:
    final = isinstance(exc, NonRetryableError) or (
        isinstance(exc, Exception)
        and not isinstance(exc, RetryLater)
        and delivery.retried >= _max_retries(workflow)
    )
    if final:
        _fail(workflow, engine, None, run, exc, name)


def _join(
    workflow: Workflow, engine: Engine, lease: Lease, delivery: Delivery, position: int
) -> Any:
    """A branch finished: go on with the main line if nobody else executes it."""
    if not state.acquire(engine, lease):
        return {"run": lease.run_id, "state": "busy"}  # the holder looks again after it
    return _drive(workflow, engine, lease, delivery, position)


# --- outside the deliveries --------------------------------------------------------------


#: ``notify(event_id)`` without data: the waits get ``{}``, never the None of a timeout.
NO_DATA: Any = object()


def notify(event_id: str, data: Any = NO_DATA) -> list[str]:
    """Store event ``event_id`` and resume every run waiting for it; return their ids.

    The waits return ``data`` (``{}`` when none is given; an explicit None reads like a
    timeout). A run that reaches ``wait_for_event(…, event_id)`` later (but started
    before this notification) finds it there, for ``WORKFLOW_EVENT_RETENTION_DAYS``.
    """
    if data is NO_DATA:
        data = {}
    check_event_id(event_id)
    engine = store_engine()
    text = encode(data, "the event's data", int(_config("WORKFLOW_MAX_RESULT_BYTES")))
    keep_ms = int(float(_config("WORKFLOW_EVENT_RETENTION_DAYS")) * 86_400_000)
    # Stored before looking for waiting runs: a run starting to wait meanwhile writes
    # its waiting row before it looks for this event (Context.wait_for_event).
    state.add_event(engine, event_id, text, keep_ms=keep_ms)
    registry = current_app.extensions["qstash_jobs"]
    resumed: list[str] = []
    unpublished: list[str] = []
    for run_id, position, name in list(state.waiting_for_event(engine, event_id)):
        if not state.resolve(engine, run_id, position, '{"event":' + text + "}", kind="event"):
            continue
        resumed.append(run_id)
        if name not in registry:
            continue
        try:
            _publish(registry[name], {"run": run_id, "step": position},
                     dedup=f"wf.{run_id}.{position}.event")  # fmt: skip
        except Exception:
            # The wait has ended in the store: the run goes on at its timeout's delivery
            # at the latest, or at once with resume(). The other runs are still resumed.
            logger.exception("notify %s: could not publish the resume of run %s", event_id, run_id)
            unpublished.append(run_id)
    if unpublished:
        raise NotifyIncomplete(resumed, unpublished)
    return resumed


class NotifyIncomplete(QStashJobsError):
    """Every waiting run got the event, but some resume deliveries could not be published."""

    def __init__(self, resumed: list[str], unpublished: list[str]) -> None:
        super().__init__(
            f"{len(resumed)} run(s) got the event, but QStash refused to deliver the resume of"
            f" {', '.join(unpublished[:10])}{' …' if len(unpublished) > 10 else ''}: they go on"
            " at their wait's timeout, or at once with `flask workflows resume RUN_ID`"
        )
        self.resumed = resumed
        self.unpublished = unpublished


def cancel(run_id: str) -> bool:
    """Cancel a live run; False if it had finished. Raises ``UnknownRun``."""
    engine = store_engine()
    if state.finish(engine, run_id, "cancelled", None):
        return True
    if state.get(engine, run_id, with_steps=False) is None:
        raise UnknownRun(f"no workflow run {run_id!r}")
    return False


def resume(run_id: str) -> str:
    """Publish a delivery that drives ``run_id`` on (a stuck run, after fixing its cause),
    and one per branch not done of the parallel step it waits for; return the driving
    delivery's message id."""
    engine = store_engine()
    run = state.get(engine, run_id, with_steps=False)
    if run is None:
        raise UnknownRun(f"no workflow run {run_id!r}")
    registry = current_app.extensions["qstash_jobs"]
    # A waiting run's position is the step after its wait: poke the wait itself, so that
    # its timer (a sleep's end, an event's timeout) is published again if it was lost.
    step = run.position - 1 if run.state == "waiting" and run.position > 0 else run.position
    workflow = registry[run.workflow]
    if run.state == "waiting":
        # Branches not done are delivered again (no dedup id: their lost messages' ids
        # would drop these); a branch is claimed once, a duplicate of a running one is busy.
        for branch in state.branches(engine, run_id, step):
            if branch.state != "done":
                _publish(workflow, {"run": run_id, "step": step, "branch": branch.branch})
    return _publish(workflow, {"run": run_id, "step": step})
