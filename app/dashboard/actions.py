"""The dashboard's workflow actions: start a run, cancel or resume one (POST forms).

Each form carries the session's CSRF token and must come from the dashboard's own origin
(``auth.form_ok``); a request with the bearer token needs no CSRF field. Success is a 303
to the run's page with ``?done=started|cancelled|resumed``. A form error re-renders the runs
page (400; 409 for a run id taken already), a finished or unknown run is a 409 or 404 page,
QStash unreachable or refusing is a 502 page, a missing setting (APP_URL, QSTASH_TOKEN, the
store) a 503 page: never a traceback.
"""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, redirect, render_template, request, url_for
from marshmallow import ValidationError
from werkzeug.wrappers import Response as BaseResponse

from app.dashboard import auth, runs
from app.errors import ConfigurationError
from app.qstash.client.errors import QStashError
from app.workflows import Run, Workflow, cancel, resume, state
from app.workflows.engine import RUN_ID_LIMIT, check_run_id, store_engine

#: Schema errors shown under the start form, at most.
MAX_ERRORS = 20


def _problem(status: int, title: str, message: str, run_id: str | None = None) -> BaseResponse:
    html = render_template("dashboard/problem.html", title=title, message=message, run_id=run_id)
    return current_app.make_response((html, status))


def _refused() -> BaseResponse:
    return _problem(
        403,
        "Form refused",
        "The form expired or came from another site; nothing was done. Reload the page and"
        " try again.",
    )


def _messages(errors: Any, field: str = "") -> list[str]:
    """Flatten marshmallow's error messages into ``field: message`` lines."""
    if isinstance(errors, dict):
        return [
            line
            for key, value in errors.items()
            for line in _messages(value, f"{field}.{key}" if field else str(key))
        ]
    if isinstance(errors, list):
        return [line for value in errors for line in _messages(value, field)]
    return [f"{field}: {errors}" if field else str(errors)]


def _publish_failed(exc: Exception, what: str, run_id: str | None) -> BaseResponse:
    if isinstance(exc, QStashError):
        return _problem(502, "QStash did not take the message", f"{what}: {exc}", run_id)
    return _problem(503, "Not configured", f"{what}: {exc}", run_id)


def start() -> Any:
    """Validate the "Start a run" form, start the run, go to its page."""
    limit = int(current_app.config["QSTASH_MAX_BODY_SIZE"])
    # A percent-encoded byte takes 3: let an input of QSTASH_MAX_BODY_SIZE bytes reach
    # the check below, which says what is wrong (Werkzeug would answer a bare 413).
    request.max_form_memory_size = 3 * limit + 4096
    if not auth.form_ok():
        return _refused()
    form = {key: request.form.get(key, "") for key in ("workflow", "input", "run_id")}
    registry = current_app.extensions["qstash_jobs"]
    errors: list[str] = []
    found = registry[form["workflow"]] if form["workflow"] in registry else None
    if not isinstance(found, Workflow):
        errors.append(f"Workflow: choose one of {', '.join(runs.declared(registry)) or 'none'}")
    payload: Any = None
    if len(form["input"].encode()) > limit:
        errors.append(f"Input: larger than QSTASH_MAX_BODY_SIZE ({limit} bytes)")
    elif form["input"].strip():
        try:
            payload = json.loads(form["input"])
        except ValueError as exc:
            errors.append(f"Input: not valid JSON ({exc})")
        except RecursionError:
            errors.append("Input: nested too deeply")
    run_id = form["run_id"].strip() or None
    if run_id is not None:
        try:
            check_run_id(run_id)
        except ValueError as exc:
            errors.append(f"Run id: {exc}")
    if errors or found is None:
        return runs.runs_page(form=form, errors=errors), 400
    try:
        engine = store_engine()  # no store: the run could never be kept, so none starts
        if run_id is not None and state.get(engine, run_id, with_steps=False):
            message = f"Run id: run {run_id} exists already; leave it empty for a new one"
            return runs.runs_page(form=form, errors=[message]), 409
        started = found.start(payload, run_id=run_id)
    except ValidationError as exc:
        lines = _messages(exc.messages, "Input")
        if len(lines) > MAX_ERRORS:
            lines = [*lines[:MAX_ERRORS], f"… and {len(lines) - MAX_ERRORS} more"]
        return runs.runs_page(form=form, errors=lines), 400
    except (QStashError, ConfigurationError) as exc:
        return _publish_failed(exc, "the run was not started", None)
    except ValueError as exc:  # an input JSON cannot carry (NaN, Infinity)
        return runs.runs_page(form=form, errors=[f"Input: {exc}"]), 400
    return redirect(url_for("dashboard.run", run_id=started, done="started"), 303)


def _live_run(run_id: str, action: str) -> Run | BaseResponse:
    """Return the live run ``run_id``, or the page saying why it cannot be ``action``."""
    found = None
    if len(run_id) <= RUN_ID_LIMIT:
        found = state.get(store_engine(), run_id, with_steps=False)
    if found is None:
        message = f"No workflow run {run_id} (never started, or expired)."
        return _problem(404, "No such run", message)
    if found.finished:
        return _problem(
            409,
            f"Nothing to {action}",
            f"Run {run_id} has finished ({found.state}): there is nothing to {action}.",
            run_id,
        )
    return found


def cancel_run(run_id: str) -> Any:
    """Cancel a live run: none of its steps runs any more (one running now may finish)."""
    if not auth.form_ok():
        return _refused()
    try:
        found = _live_run(run_id, "cancel")
        if not isinstance(found, Run):
            return found
        if not cancel(run_id):  # it finished meanwhile
            return _problem(409, "Nothing to cancel", f"Run {run_id} has just finished.", run_id)
    except ConfigurationError as exc:
        return _publish_failed(exc, "nothing was cancelled", None)
    return redirect(url_for("dashboard.run", run_id=run_id, done="cancelled"), 303)


def resume_run(run_id: str) -> Any:
    """Publish a delivery that drives a live run on (after fixing what stopped it)."""
    if not auth.form_ok():
        return _refused()
    try:
        found = _live_run(run_id, "resume")
        if not isinstance(found, Run):
            return found
        registry = current_app.extensions["qstash_jobs"]
        declared = registry[found.workflow] if found.workflow in registry else None
        if not isinstance(declared, Workflow):
            return _problem(
                409,
                "Cannot resume",
                f"Run {run_id} belongs to workflow {found.workflow}, which this app does not"
                " declare (renamed or removed since the run started).",
                run_id,
            )
        resume(run_id)
    except (QStashError, ConfigurationError) as exc:
        return _publish_failed(exc, "the run was not resumed", run_id)
    return redirect(url_for("dashboard.run", run_id=run_id, done="resumed"), 303)
