"""Steps whose effects land in an append-only file outside the store, one JSON line each.

``$WF_EFFECTS`` names the file. Each line is written with one ``write`` on an ``O_APPEND``
descriptor (lines are far below PIPE_BUF), so lines from concurrent workers never mix, and
a worker killed after the write leaves its line behind: the file counts what really
happened, whatever the store says. ``phase`` is ``begin`` (the step function was entered)
or ``effect`` (its side effect happened).

``blocker`` waits, after its effect, until ``$WF_GATES/<run id>`` exists: a test kills the
worker running it meanwhile, then opens the gate for the re-run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from app.workflows import Context, workflow

#: How long a blocked step waits for its gate before failing (the test kills it first).
GATE_TIMEOUT_S = 60.0


def append(run_id: str, step: str, phase: str) -> None:
    """Append one line ``{"run", "step", "phase", "pid", "at"}`` to ``$WF_EFFECTS``."""
    fields = {"run": run_id, "step": step, "phase": phase, "pid": os.getpid(), "at": time.time()}
    line = json.dumps(fields)
    fd = os.open(os.environ["WF_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def effect(run_id: str, step: str) -> dict[str, Any]:
    """A step: record its begin and its effect; return something JSON."""
    append(run_id, step, "begin")
    append(run_id, step, "effect")
    return {"step": step, "pid": os.getpid()}


def blocker(run_id: str, step: str) -> dict[str, Any]:
    """A step that has its effect, then blocks until the test opens ``$WF_GATES/<run>``."""
    append(run_id, step, "begin")
    append(run_id, step, "effect")
    gate = Path(os.environ["WF_GATES"]) / run_id
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.02)
    return {"step": step, "pid": os.getpid()}


#: The steps of ``wf-five``, in order (the sleep sits between the second and the third).
FIVE_STEPS = ("one", "two", "three", "four", "five")


@workflow("wf-five", retries=20, retry_delay="200")
def five(ctx: Context, payload: Any) -> dict[str, Any]:
    """Five steps with a short sleep in the middle."""
    ctx.run("one", effect, ctx.run_id, "one")
    ctx.run("two", effect, ctx.run_id, "two")
    ctx.sleep("nap", float((payload or {}).get("sleep", 1)))
    ctx.run("three", effect, ctx.run_id, "three")
    ctx.run("four", effect, ctx.run_id, "four")
    last = ctx.run("five", effect, ctx.run_id, "five")
    return {"last": last["step"]}


@workflow("wf-crash", retries=20, retry_delay="200")
def crash(ctx: Context, payload: Any) -> dict[str, Any]:
    """A step completes, the next blocks (the test kills its worker), two more follow."""
    ctx.run("before", effect, ctx.run_id, "before")
    ctx.run("blocked", blocker, ctx.run_id, "blocked")
    ctx.run("after-1", effect, ctx.run_id, "after-1")
    ctx.run("after-2", effect, ctx.run_id, "after-2")
    return {"done": True}


@workflow("wf-crash-branch", retries=20, retry_delay="200")
def crash_branch(ctx: Context, payload: Any) -> dict[str, Any]:
    """A parallel step whose second branch blocks (the test kills its worker)."""
    ctx.run("before", effect, ctx.run_id, "before")
    a, b = ctx.parallel(
        ("left", effect, ctx.run_id, "left"), ("right", blocker, ctx.run_id, "right")
    )
    ctx.run("after", effect, ctx.run_id, "after")
    return {"left": a["step"], "right": b["step"]}


#: The steps of ``wf-mixed`` with an effect, and the event each run waits for.
MIXED_STEPS = ("one", "left", "right", "last")


def confirm_event(run_id: str) -> str:
    return f"confirm:{run_id}"


@workflow("wf-mixed", retries=20, retry_delay="200")
def mixed(ctx: Context, payload: Any) -> dict[str, Any]:
    """Every kind of step: run, parallel, sleep, wait_for_event, run."""
    ctx.run("one", effect, ctx.run_id, "one")
    ctx.parallel(("left", effect, ctx.run_id, "left"), ("right", effect, ctx.run_id, "right"))
    ctx.sleep("nap", 1)
    event = ctx.wait_for_event("confirm", confirm_event(ctx.run_id), timeout="60s")
    ctx.run("last", effect, ctx.run_id, "last")
    return {"event": event}
