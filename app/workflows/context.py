"""The ``ctx`` a workflow function gets: each call is a step, recorded once, replayed after.

Every delivery runs the workflow function again from the top. Step ``n`` that is recorded
returns its stored result without running; the first unrecorded step runs (``run``,
``call``) or starts waiting (``sleep``, ``wait_for_event``, ``parallel``). A wait that
cannot end yet stops the function by raising ``Suspend``, a ``BaseException`` so that a
user's ``except Exception`` never swallows it; the engine catches it, and a later
delivery replays to the same point and goes on.

Determinism: step ``n`` must have the name and kind recorded at ``n``; a replay that
reaches another step fails the run with ``NonDeterministic`` naming both, instead of
pairing a result with the wrong step.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from app.errors import NonRetryableError
from app.qstash.client.expressions import Duration, duration_seconds
from app.qstash.client.options import unix_seconds
from app.workflows import state
from app.workflows.state import MAIN, Run, Step

if TYPE_CHECKING:
    from app.workflows.engine import Execution

__all__ = ["Context", "NonDeterministic", "Suspend"]

#: A step's name: what the timeline shows and the determinism check compares.
NAME_LIMIT = 200
#: The most branches one ``parallel`` call may have.
MAX_BRANCHES = 100
#: How early (by this host's clock) a timer may arrive and still count: QStash never
#: delivers early, but two hosts' clocks differ a little.
CLOCK_SLACK_MS = 1000


class NonDeterministic(NonRetryableError):
    """A replay reached a different step than the one recorded at that position."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="workflow_nondeterministic")


class Suspend(BaseException):  # noqa: N818 - a signal, not an error
    """Stop the workflow function here; the engine decides what happens next."""

    def __init__(self, wait: Wait | Handoff | BranchCall) -> None:
        super().__init__(wait)
        self.wait = wait


@dataclass(frozen=True)
class Wait:
    """The run waits at main-line step ``position``."""

    position: int
    waiting_for: str
    #: When a timer delivery must look again (sleep's end, event's timeout), epoch s.
    timer_at: float | None = None
    #: The branches still to run, whose deliveries may need publishing.
    branches: tuple[int, ...] = ()


@dataclass(frozen=True)
class Handoff:
    """This delivery used its time: the next delivery goes on from ``position``."""

    position: int


@dataclass(frozen=True)
class BranchCall:
    """A branch delivery reached its parallel step: run this branch's function."""

    name: str
    call: Callable[[], Any]


def encode(value: Any, what: str, limit: int) -> str:
    """Return ``value`` as strict JSON text of at most ``limit`` bytes, or raise."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise NonRetryableError(
            f"{what} is not JSON ({exc}): return dicts, lists, strings, numbers, booleans or None",
            code="workflow_result_not_json",
        ) from None
    if len(text.encode("utf-8")) > limit:
        raise NonRetryableError(
            f"{what} is larger than WORKFLOW_MAX_RESULT_BYTES ({limit} bytes): store big"
            " data elsewhere and return a reference",
            code="workflow_result_too_large",
        )
    return text


def _check_name(name: Any, what: str) -> str:
    """Return ``name`` if it can name a step or event, in the store of any database."""
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= NAME_LIMIT
        or any(c < " " or c == "\x7f" or "\ud800" <= c <= "\udfff" for c in name)
    ):
        raise NonRetryableError(
            f"{what} must be a string of 1 to {NAME_LIMIT} characters without control"
            f" characters, not {name!r:.60}",
            code="workflow_bad_step",
        )
    return name


def check_event_id(event_id: Any) -> str:
    """Return ``event_id``, or raise ``NonRetryableError``: the one rule for an event id, in
    a wait, in ``notify`` and over HTTP and the CLI (so no run waits for an id nobody can
    notify)."""
    if (
        not isinstance(event_id, str)
        or not 0 < len(event_id) <= NAME_LIMIT
        or not (event_id.isprintable())
    ):
        raise NonRetryableError(
            f"an event id is 1 to {NAME_LIMIT} printable characters, not {event_id!r:.80}",
            code="bad_event_id",
        )
    return event_id


class Context:
    """What a workflow function uses to run steps. One per delivery; not thread-safe."""

    def __init__(self, execution: Execution, run: Run) -> None:
        self._execution = execution
        self.run_id = run.id
        self.workflow = run.workflow
        self._created_ms = run.created_ms
        self._main = {step.position: step for step in run.steps if step.branch == MAIN}
        self._position = 0

    # -- the steps ----------------------------------------------------------------------

    def run(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` once per run; return its (JSON) result on every replay.

        An exception retries the step with the workflow's retry policy;
        ``NonRetryableError`` fails the run.
        """
        recorded = self._recorded(_check_name(name, "a step's name"), "run")
        if recorded is not None:
            return _decode(recorded.result)
        return self._execution.execute(self._position - 1, name, "run", lambda: fn(*args, **kwargs))

    def call(
        self,
        name: str,
        url: str,
        *,
        method: str = "POST",
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Make an HTTP request once per run through the SSRF-safe outbound client.

        Returns ``{"status", "headers", "body"}`` (body as text, cut at
        ``WEBHOOK_MAX_RESPONSE_BYTES``); ``body`` other than bytes/str is sent as JSON.
        Any answer, even a 500, is the step's result; a network error retries the step.
        """
        recorded = self._recorded(_check_name(name, "a step's name"), "call")
        if recorded is not None:
            return dict(_decode(recorded.result))
        from app.workflows.calls import request

        def send() -> dict[str, Any]:
            return request(method, url, body=body, headers=headers or {})

        return dict(self._execution.execute(self._position - 1, name, "call", send))

    def sleep(self, name: str, duration: Duration) -> None:
        """Wait ``duration`` (``"3d"``, seconds…) with no worker waiting."""
        seconds = duration_seconds(duration, name="duration")
        self._sleep(_check_name(name, "a step's name"), self._execution.now() + seconds)

    def sleep_until(self, name: str, when: datetime | int | float) -> None:
        """Wait until ``when`` (an aware datetime or epoch seconds)."""
        self._sleep(_check_name(name, "a step's name"), float(unix_seconds(when)))

    def wait_for_event(self, name: str, event_id: str, *, timeout: Duration = "7d") -> Any:
        """Wait until ``notify(event_id, data)``; return ``data``, or None after ``timeout``.

        An event notified after the run started and before it reached this wait counts.
        """
        _check_name(name, "a step's name")
        check_event_id(event_id)
        timeout_s = duration_seconds(timeout, name="timeout")
        recorded = self._recorded(name, "event")
        position = self._position - 1
        execution = self._execution
        # The slack is for a timer's delivery arriving a little early, not for the first
        # reach: with it, a timeout of a second or less would end before it began.
        slack_ms = CLOCK_SLACK_MS if recorded is not None else 0
        if recorded is None:
            wake_ms = int((execution.now() + timeout_s) * 1000)
            # Written before looking for the event: a notification racing this wait
            # either sees the waiting row or is seen below (app.workflows.engine.notify).
            execution.record_wait(position, name, "event", wake_ms=wake_ms, event_id=event_id)
        elif recorded.state == "done":
            return _event_value(recorded.result)
        else:
            wake_ms = recorded.wake_ms or 0
        data = state.latest_event(execution.engine, event_id, self._created_ms)
        if data is not None:
            return self._resolved(position, '{"event":' + data + "}")
        if execution.now() * 1000 >= wake_ms - slack_ms:
            return self._resolved(position, '{"timeout":true}')
        until = _utc(wake_ms)
        raise Suspend(Wait(position, f"event {event_id} (until {until})", wake_ms / 1000))

    def parallel(self, *branches: Sequence[Any]) -> list[Any]:
        """Run branches ``(name, fn, *args)`` as separate deliveries; return results in order.

        Each branch runs once, possibly on another worker or host, with the workflow's
        retry policy; the run goes on when all have finished.
        """
        if not branches or len(branches) > MAX_BRANCHES:
            raise NonRetryableError(
                f"parallel takes 1 to {MAX_BRANCHES} branches, not {len(branches)}",
                code="workflow_bad_step",
            )
        names = []
        for branch in branches:
            if not isinstance(branch, (tuple, list)) or len(branch) < 2 or not callable(branch[1]):
                raise NonRetryableError(
                    "each parallel branch is a tuple (name, fn, *args)", code="workflow_bad_step"
                )
            names.append(_check_name(branch[0], "a branch's name"))
        if len(set(names)) != len(names):
            raise NonRetryableError(
                f"parallel branch names must differ: {names}", code="workflow_bad_step"
            )
        name = " + ".join(names)[:NAME_LIMIT]
        recorded = self._recorded(name, "parallel")
        position = self._position - 1
        execution = self._execution
        if recorded is None:
            execution.record_parallel(position, name, names)
            raise Suspend(Wait(position, f"parallel {name}", branches=tuple(range(len(names)))))
        if recorded.state == "done":
            return list(_decode(recorded.result))
        target = execution.branch_target
        if target is not None and target[0] == position:
            fn, *args = branches[target[1]][1:]
            raise Suspend(BranchCall(names[target[1]], lambda: fn(*args)))
        rows = state.branches(execution.engine, self.run_id, position)
        if [row.name for row in rows] != names:
            raise NonDeterministic(
                f"parallel step {name!r} at position {position} was recorded with branches"
                f" {[row.name for row in rows]}, this replay has {names}"
            )
        if all(row.state == "done" for row in rows):
            results = "[" + ",".join(row.result or "null" for row in rows) + "]"
            return list(_decode(self._resolved_text(position, results)))
        pending = tuple(row.branch for row in rows if row.state == "pending")
        raise Suspend(Wait(position, f"parallel {name}", branches=pending))

    def check_finished(self) -> None:
        """The function returned: it must have replayed every step the run recorded."""
        extra = sorted(position for position in self._main if position >= self._position)
        if extra:
            step = self._main[extra[0]]
            raise NonDeterministic(
                f"the workflow returned after {self._position} steps, but the run recorded"
                f" {step.name!r} ({step.kind}) at position {extra[0]}: its code changed"
                " between deliveries"
            )

    # -- replay -------------------------------------------------------------------------

    def _recorded(self, name: str, kind: str) -> Step | None:
        if self._execution.failed is not None:
            # A step failed (or the lease was lost) and the function caught it: nothing
            # may be recorded after an unrecorded step, so the failure stops the run here.
            raise self._execution.failed
        running = self._execution.current_step
        if running is not None:
            raise NonRetryableError(
                f"step {name!r} was called inside step {running!r}: steps cannot be nested"
                " (call ctx's methods from the workflow function only)",
                code="workflow_bad_step",
            )
        position = self._position
        self._position += 1
        self._execution.check_step_count(position)
        recorded = self._main.get(position)
        if recorded is None:
            target = self._execution.branch_target
            if target is not None and position <= target[0]:
                raise NonDeterministic(
                    f"replaying for a branch of step {target[0]}, the workflow reached a new"
                    f" step {name!r} ({kind}) at position {position}"
                )
            return None
        if (recorded.name, recorded.kind) != (name, kind):
            raise NonDeterministic(
                f"the replay reached step {name!r} ({kind}) at position {position}, where the"
                f" run recorded {recorded.name!r} ({recorded.kind}): the workflow's code or its"
                " inputs changed between deliveries (steps must be called in the same order"
                " on every replay)"
            )
        return recorded

    def _sleep(self, name: str, wake_s: float) -> None:
        recorded = self._recorded(name, "sleep")
        position = self._position - 1
        execution = self._execution
        wake_ms = int(wake_s * 1000)
        if recorded is None:
            due = execution.now() * 1000 >= wake_ms
            execution.record_wait(position, name, "sleep", wake_ms=wake_ms, done=due)
            if due:
                return
        elif recorded.state == "done":
            return
        else:
            wake_ms = recorded.wake_ms or 0
            if execution.now() * 1000 >= wake_ms - CLOCK_SLACK_MS:
                self._resolved(position, None)
                return
        until = _utc(wake_ms)
        raise Suspend(Wait(position, f"sleep {name} (until {until})", wake_ms / 1000))

    def _resolved_text(self, position: int, result: str | None) -> str | None:
        """End the wait at ``position`` with ``result``; the result that won if another did."""
        engine = self._execution.engine
        if state.resolve(engine, self.run_id, position, result):
            return result
        row = state.step_row(engine, self.run_id, position)
        if row is None or row.state != "done":
            lost = state.LeaseLost(f"run {self.run_id}: step {position} changed under this replay")
            self._execution.failed = lost
            raise lost
        return row.result

    def _resolved(self, position: int, result: str | None) -> Any:
        return _event_value(self._resolved_text(position, result))


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _event_value(text: str | None) -> Any:
    value = _decode(text)
    if isinstance(value, dict) and "event" in value:
        return value["event"]
    return None
