"""The dashboard's workflow pages: the runs (filtered, counted, paged) and one run's timeline.

Bounded whatever the store holds: a page of at most ``PAGE`` runs, at most ``STEP_PAGE``
step rows, and every result, input and output cut to ``RESULT_CHARS`` characters by the
database (a step's result may be a megabyte; the page never reads it whole).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from flask import abort, current_app, render_template, request

from app.store import get_store
from app.workflows import Workflow, state
from app.workflows.display import StepView, abbreviate, duration, step_views

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from app.jobs import JobRegistry

#: Runs per page.
PAGE = 100
#: Step rows per page of a run's timeline: more than one position's rows (a parallel
#: step and its MAX_BRANCHES branches), which a page never splits.
STEP_PAGE = 500
#: How much of a result, an input or an output is shown.
RESULT_CHARS = 300
RUN_STATES = (*state.LIVE, *state.FINISHED)
#: What ``?done=`` on a run's page may report (the dashboard's actions redirect there).
DONE = ("started", "cancelled", "resumed")
#: The timeline bars' width, in SVG units.
BAR_WIDTH = 240


def declared(registry: JobRegistry) -> list[str]:
    """Return the names of the workflows the app declares."""
    return [job.name for job in registry if isinstance(job, Workflow)]


def _engine() -> Engine | None:
    store = get_store(current_app)
    return None if store is None else store.engine


def _choice(name: str, allowed: tuple[str, ...] | None = None) -> str | None:
    value = request.args.get(name) or None
    if value is not None and (len(value) > 200 or (allowed and value not in allowed)):
        choices = f": one of {', '.join(allowed)}" if allowed else ""
        abort(400, description=f"bad {name}{choices}")
    return value


def _before() -> tuple[int, str] | None:
    """Read ``?before=<created_ms>.<run id>``: the last run of the previous page."""
    text = request.args.get("before")
    if not text:
        return None
    created, _, run_id = text.partition(".")
    if not (created.isascii() and created.isdigit() and len(created) <= 15 and run_id):
        abort(400, description="bad before: <created_ms>.<run id> of a listed run")
    return int(created), run_id


def runs() -> str:
    """List runs, newest first (``?workflow=&state=&before=``), with counts per state."""
    return runs_page()


def runs_page(form: dict[str, str] | None = None, errors: list[str] | None = None) -> str:
    """The runs page, its "Start a run" form filled with ``form`` and showing ``errors``."""
    registry: JobRegistry = current_app.extensions["qstash_jobs"]
    workflow, run_state = _choice("workflow"), _choice("state", RUN_STATES)
    before = _before()
    context: dict[str, Any] = {
        "workflows": declared(registry),
        "states": RUN_STATES,
        "workflow": workflow,
        "state": run_state,
        "form": form or {"workflow": workflow or "", "input": "{}", "run_id": ""},
        "errors": errors or [],
        "max_input": int(current_app.config["QSTASH_MAX_BODY_SIZE"]),
    }
    engine = _engine()
    if engine is None:
        return render_template("dashboard/runs.html", store_on=False, **context)
    found = state.runs(engine, workflow=workflow, state=run_state, limit=PAGE + 1, before=before)
    last = found[PAGE - 1] if len(found) > PAGE else None
    return render_template(
        "dashboard/runs.html",
        store_on=True,
        runs=found[:PAGE],
        counts=state.counts(engine, workflow=workflow),
        older=f"{last.created_ms}.{last.id}" if last else None,
        newer=before is not None,
        abbreviate=abbreviate,
        **context,
    )


# --- one run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """A step's bar on the run's timeline, in SVG units."""

    x: float
    width: float
    open: bool


def bars(views: list[StepView], start_ms: int, end_ms: int) -> list[Bar]:
    """Lay each step out on one time axis from ``start_ms`` to ``end_ms`` (a step still
    running or waiting reaches the end); every step stays at least 2 units wide."""
    span = max(end_ms - start_ms, 1)
    laid = []
    for view in views:
        step = view.step
        # Clamped: hosts' clocks differ a little, so a step may seem to start before its
        # run or end after the page's "now".
        begin = min(max(step.started_ms, start_ms), end_ms)
        finish = min(max(step.finished_ms or end_ms, begin), end_ms)
        x = min((begin - start_ms) / span * BAR_WIDTH, BAR_WIDTH - 2.0)
        width = min(max((finish - begin) / span * BAR_WIDTH, 2.0), BAR_WIDTH - x)
        laid.append(Bar(round(x, 1), round(width, 1), step.finished_ms is None))
    return laid


def run(run_id: str) -> Any:
    """Show one run: its input, state, current wait and a timeline of its steps."""
    engine = _engine()
    if engine is None:
        abort(404, description="the store is off: no workflow runs")
    found = state.summary(engine, run_id, RESULT_CHARS)
    done = request.args.get("done")
    done = done if done in DONE else None
    if found is None:
        # Just started: the run exists once QStash delivers its start, which may take a moment.
        status = 200 if done == "started" else 404
        return render_template("dashboard/run.html", run=None, run_id=run_id, done=done), status
    start = request.args.get("from", "0")
    if not (start.isascii() and start.isdigit() and len(start) <= 9):
        abort(400, description="bad from: a step position")
    rows, next_from = state.step_page(engine, run_id, int(start), STEP_PAGE, RESULT_CHARS)
    views = step_views(replace(found, steps=tuple(rows)))
    now_ms = int(time.time() * 1000)
    end_ms = found.finished_ms or max(
        [now_ms, *(v.step.finished_ms or v.step.started_ms for v in views)]
    )
    return render_template(
        "dashboard/run.html",
        run=found,
        views=views,
        timeline=list(zip(views, bars(views, found.created_ms, end_ms), strict=True)),
        bar_width=BAR_WIDTH,
        took=duration(end_ms - found.created_ms),
        next_from=next_from,
        start=int(start),
        abbreviate=abbreviate,
        duration=duration,
        limit=RESULT_CHARS,
        done=done,
    )
