"""The dashboard's workflow actions: start a run, cancel it, resume it (POST forms).

Each test signs in through the login form (a session cookie and its CSRF token), except
those that use the bearer token. Each action's effect is checked in the store and in
what the stub queue was given to publish.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.jobs import JobRegistry
from app.qstash.client.api import QStash
from app.testing import StubQueue
from app.workflows import state, workflow
from app.workflows.engine import store_engine
from tests.servers import free_port
from tests.workflows.runs import declare, deliver_due

TOKEN = "a-dashboard-token-of-some-length"
App = tuple[Flask, StubQueue]
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def app(make_app: Callable[..., App], registry: JobRegistry) -> App:
    declare(registry)
    return make_app(DASHBOARD_TOKEN=TOKEN)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


def signed_in(flask_app: Flask) -> tuple[FlaskClient, str]:
    """A client with a dashboard session, and the session's CSRF token."""
    client = flask_app.test_client()
    csrf = csrf_of(client.get("/dashboard/login").get_data(as_text=True))
    response = client.post("/dashboard/login", data={"token": TOKEN, "csrf_token": csrf})
    assert response.status_code == 302
    # The login starts a fresh session, with a CSRF token of its own.
    return client, csrf_of(client.get("/dashboard/runs").get_data(as_text=True))


def run_state(flask_app: Flask, run_id: str) -> str | None:
    with flask_app.app_context():
        found = state.get(store_engine(), run_id, with_steps=False)
    return None if found is None else found.state


def started(app: App, run_id: str, order: str = "o-1") -> str:
    """Start ``order`` as ``run_id`` and deliver what is due: the run waits in its sleep."""
    flask_app, queue = app
    with flask_app.app_context():
        flask_app.extensions["qstash_jobs"]["order"].start({"order": order}, run_id=run_id)
    deliver_due(flask_app, queue)
    return run_id


def text(response: Any) -> str:
    body: str = response.get_data(as_text=True)
    return body


# --- start --------------------------------------------------------------------------------


def test_the_start_form_starts_a_run_and_leads_to_its_page(app: App) -> None:
    """Start → 303 to the run's page; before the first delivery it says the run is on its
    way (200, not 404), after it shows the run with the notice."""
    flask_app, queue = app
    client, csrf = signed_in(flask_app)
    page = text(client.get("/dashboard/runs"))
    assert 'id="start"' in page and '<option value="order"' in page
    assert '<option value="plain"' not in page.split('id="start"')[1].split("</form>")[0]
    form = {"csrf_token": csrf, "workflow": "order", "input": '{"order": "o-1", "qty": 2}',
            "run_id": "from-the-dashboard"}  # fmt: skip
    response = client.post("/dashboard/runs/start", data=form)
    assert response.status_code == 303
    assert response.headers["Location"] == "/dashboard/runs/from-the-dashboard?done=started"
    [message] = queue.messages
    assert message.job == "order" and message.payload == {"order": "o-1", "qty": 2}
    assert "run=from-the-dashboard" in message.message.destination
    waiting = client.get(response.headers["Location"])
    assert waiting.status_code == 200
    assert "was started: it shows here once QStash delivers" in text(waiting)
    deliver_due(flask_app, queue)
    assert run_state(flask_app, "from-the-dashboard") == "waiting"
    shown = text(client.get(response.headers["Location"]))
    assert 'id="done"' in shown and "Run started." in shown
    assert 'id="cancel"' in shown and 'id="resume"' in shown


def test_an_empty_run_id_starts_a_new_run(app: App) -> None:
    flask_app, queue = app
    client, csrf = signed_in(flask_app)
    form = {"csrf_token": csrf, "workflow": "order", "input": '{"order": "o-2"}', "run_id": " "}
    response = client.post("/dashboard/runs/start", data=form)
    assert response.status_code == 303
    run_id = re.fullmatch(r"/dashboard/runs/(wfr_[0-9a-f]{32})\?done=started",
                          response.headers["Location"])  # fmt: skip
    assert run_id is not None
    deliver_due(flask_app, queue)
    assert run_state(flask_app, run_id.group(1)) == "waiting"


@pytest.mark.parametrize(
    ("form", "status", "says"),
    [
        ({"input": '{"order": '}, 400, "Input: not valid JSON"),
        ({"input": '{"qty": "many"}'}, 400, "Input.order: Missing data for required field."),
        ({"input": "[1, 2]"}, 400, "Input._schema: Invalid input type."),
        ({"input": '{"order": NaN}'}, 400, "Input.order: Not a valid string."),
        ({"workflow": "free", "input": '{"x": NaN}'}, 400, "Input: the payload is not JSON"),
        ({"run_id": "a run id"}, 400, "Run id: a run id is 1 to 200 ASCII letters"),
        ({"run_id": "x" * 201}, 400, "Run id: a run id is 1 to 200"),
        ({"workflow": "plain"}, 400, "Workflow: choose one of free, order"),
        ({"workflow": "nope"}, 400, "Workflow: choose one of free, order"),
        ({"input": '{"order": "' + "x" * 1100 + '"}'}, 400, "larger than QSTASH_MAX_BODY_SIZE"),
    ],
)
def test_a_bad_start_form_is_shown_again_with_its_errors(
    make_app: Callable[..., App], registry: JobRegistry, form: dict[str, str], status: int,
    says: str,
) -> None:  # fmt: skip
    """Bad JSON, a schema failure, a bad run id, a job that is no workflow, an input over
    QSTASH_MAX_BODY_SIZE: the form again with what is wrong and what was typed; nothing
    published."""
    declare(registry)
    workflow("free", registry=registry)(lambda ctx, payload: payload)  # a second one
    flask_app, queue = make_app(DASHBOARD_TOKEN=TOKEN, QSTASH_MAX_BODY_SIZE=1024)
    client, csrf = signed_in(flask_app)
    data = {"csrf_token": csrf, "workflow": "order", "input": '{"order": "o"}', "run_id": ""}
    response = client.post("/dashboard/runs/start", data={**data, **form})
    page = text(response)
    assert response.status_code == status, page[:500]
    errors = page.split('id="start-errors"', 1)[1].split("</ul>", 1)[0]
    assert says.replace('"', "&#34;") in errors
    assert queue.messages == []
    shown_input = form.get("input", data["input"])
    if len(shown_input) < 200:
        assert shown_input.replace('"', "&#34;") in page  # what was typed, kept


def test_schema_errors_are_shown_twenty_at_most(
    make_app: Callable[..., App], registry: JobRegistry
) -> None:
    declare(registry)
    flask_app, queue = make_app(DASHBOARD_TOKEN=TOKEN)
    client, csrf = signed_in(flask_app)
    payload = json.dumps({"order": "o", **{f"extra{n}": n for n in range(50)}})
    form = {"csrf_token": csrf, "workflow": "order", "input": payload}
    response = client.post("/dashboard/runs/start", data=form)
    assert response.status_code == 400
    errors = text(response).split('id="start-errors"', 1)[1].split("</ul>", 1)[0]
    assert errors.count("<li>") == 21 and "… and 30 more" in errors
    assert queue.messages == []


def test_deeply_nested_input_is_a_form_error(app: App) -> None:
    """json.loads raises RecursionError, no ValueError, past ~1000 levels: still a 400."""
    flask_app, queue = app
    client, csrf = signed_in(flask_app)
    form = {"csrf_token": csrf, "workflow": "order", "input": "[" * 100_000 + "]" * 100_000}
    response = client.post("/dashboard/runs/start", data=form)
    assert response.status_code == 400
    assert "Input: nested too deeply" in text(response)
    assert queue.messages == []


def test_starting_an_existing_run_id_is_refused(app: App) -> None:
    """Workflow.start would start nothing for an id in use: the form says so (409)."""
    flask_app, queue = app
    started(app, "taken")
    queue.messages.clear()
    client, csrf = signed_in(flask_app)
    form = {"csrf_token": csrf, "workflow": "order", "input": '{"order": "o"}', "run_id": "taken"}
    response = client.post("/dashboard/runs/start", data=form)
    assert response.status_code == 409
    assert "Run id: run taken exists already" in text(response)
    assert queue.messages == []


def test_an_input_of_the_full_body_size_reaches_the_form_check(
    make_app: Callable[..., App], registry: JobRegistry
) -> None:
    """Percent-encoded, an input of QSTASH_MAX_BODY_SIZE bytes is three times as large:
    still the form's own answer (started), not Werkzeug's bare 413."""
    declare(registry)
    limit = 600_000  # over Flask's default MAX_FORM_MEMORY_SIZE of 500 000 once encoded
    flask_app, queue = make_app(DASHBOARD_TOKEN=TOKEN, QSTASH_MAX_BODY_SIZE=limit)
    client, csrf = signed_in(flask_app)
    payload = '{"order": "' + "é" * ((limit - 20) // 2) + '"}'
    form = {"csrf_token": csrf, "workflow": "order", "input": payload, "run_id": "big"}
    assert client.post("/dashboard/runs/start", data=form).status_code == 303
    assert len(queue.messages) == 1
    over = {**form, "input": payload + " " * 20, "run_id": "bigger"}
    response = client.post("/dashboard/runs/start", data=over)
    assert response.status_code == 400 and "larger than QSTASH_MAX_BODY_SIZE" in text(response)


# --- who may act --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("csrf", "headers"),
    [
        (None, {}),
        ("guess", {}),
        ("right", {"Origin": "https://evil.example"}),
        ("right", {"Origin": "null"}),
    ],
    ids=["no-csrf", "wrong-csrf", "cross-origin", "null-origin"],
)
@pytest.mark.parametrize("action", ["start", "cancel", "resume"])
def test_a_form_without_the_csrf_token_or_from_elsewhere_does_nothing(
    app: App, csrf: str | None, headers: dict[str, str], action: str
) -> None:
    """403 and nothing started, cancelled or published."""
    flask_app, queue = app
    started(app, "live")
    published = len(queue.messages)
    client, token = signed_in(flask_app)
    data = {"workflow": "order", "input": '{"order": "o"}', "run_id": "new"}
    if csrf is not None:
        data["csrf_token"] = token if csrf == "right" else csrf
    path = "/dashboard/runs/start" if action == "start" else f"/dashboard/runs/live/{action}"
    response = client.post(path, data=data, headers=headers)
    assert response.status_code == 403
    assert "nothing was done" in text(response)
    assert len(queue.messages) == published
    assert run_state(flask_app, "live") == "waiting"
    assert run_state(flask_app, "new") is None


@pytest.mark.parametrize("action", ["start", "cancel", "resume"])
def test_without_credentials_the_form_leads_to_the_login(app: App, action: str) -> None:
    flask_app, queue = app
    started(app, "live")
    published = len(queue.messages)
    path = "/dashboard/runs/start" if action == "start" else f"/dashboard/runs/live/{action}"
    response = flask_app.test_client().post(path, data={"workflow": "order", "input": "{}"})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/dashboard/login")
    wrong = flask_app.test_client().post(path, headers={"Authorization": "Bearer wrong-token"})
    assert wrong.status_code == 401
    assert len(queue.messages) == published and run_state(flask_app, "live") == "waiting"


def test_the_bearer_token_needs_no_csrf_field(app: App) -> None:
    """A bearer-token request carries no cookie, so no other site can forge it."""
    flask_app, queue = app
    client = flask_app.test_client()
    form = {"workflow": "order", "input": '{"order": "o"}', "run_id": "by-bearer"}
    response = client.post("/dashboard/runs/start", data=form, headers=BEARER)
    assert response.status_code == 303
    deliver_due(flask_app, queue)
    assert run_state(flask_app, "by-bearer") == "waiting"
    response = client.post("/dashboard/runs/by-bearer/cancel", headers=BEARER)
    assert response.status_code == 303
    assert run_state(flask_app, "by-bearer") == "cancelled"
    # Still refused from another origin.
    cross = {**BEARER, "Origin": "https://evil.example"}
    assert client.post("/dashboard/runs/start", data=form, headers=cross).status_code == 403


# --- cancel and resume --------------------------------------------------------------------


def test_cancel_cancels_a_live_run(app: App) -> None:
    """303 to the run's page with the notice; the run is cancelled in the store, its
    pending timer runs nothing, and the page no longer offers the actions."""
    flask_app, queue = app
    started(app, "to-cancel")
    client, csrf = signed_in(flask_app)
    page = text(client.get("/dashboard/runs/to-cancel"))
    assert 'action="/dashboard/runs/to-cancel/cancel"' in page
    response = client.post("/dashboard/runs/to-cancel/cancel", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert response.headers["Location"] == "/dashboard/runs/to-cancel?done=cancelled"
    assert run_state(flask_app, "to-cancel") == "cancelled"
    shown = text(client.get(response.headers["Location"]))
    assert "Run cancelled" in shown and 'id="cancel"' not in shown and 'id="resume"' not in shown
    deliver_due(flask_app, queue, advance=3601)  # the sleep's end: the run stays cancelled
    assert run_state(flask_app, "to-cancel") == "cancelled"


def test_resume_publishes_a_delivery_that_drives_the_run_on(app: App) -> None:
    flask_app, queue = app
    started(app, "to-resume")
    before = len(queue.messages)
    client, csrf = signed_in(flask_app)
    response = client.post("/dashboard/runs/to-resume/resume", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert response.headers["Location"] == "/dashboard/runs/to-resume?done=resumed"
    [poke] = queue.messages[before:]
    assert "run=to-resume" in poke.message.destination and "step=" in poke.message.destination
    assert "Resume published" in text(client.get(response.headers["Location"]))
    assert run_state(flask_app, "to-resume") == "waiting"


@pytest.mark.parametrize("action", ["cancel", "resume"])
def test_a_finished_or_unknown_run_gets_a_clear_page(app: App, action: str) -> None:
    """A finished run: 409 saying it has finished; an unknown one: 404. Nothing done."""
    flask_app, queue = app
    started(app, "done")
    with flask_app.app_context():
        assert state.finish(store_engine(), "done", "cancelled", None)
    published = len(queue.messages)
    client, csrf = signed_in(flask_app)
    finished = client.post(f"/dashboard/runs/done/{action}", data={"csrf_token": csrf})
    assert finished.status_code == 409
    assert f"Run done has finished (cancelled): there is nothing to {action}." in text(finished)
    unknown = client.post(f"/dashboard/runs/nope/{action}", data={"csrf_token": csrf})
    assert unknown.status_code == 404 and "No workflow run nope" in text(unknown)
    long = client.post(f"/dashboard/runs/{'x' * 300}/{action}", data={"csrf_token": csrf})
    assert long.status_code == 404
    assert len(queue.messages) == published


def test_a_finished_run_offers_no_actions(app: App) -> None:
    flask_app, queue = app
    started(app, "over", order="fail-1")
    assert run_state(flask_app, "over") == "failed"
    page = text(flask_app.test_client().get("/dashboard/runs/over", headers=BEARER))
    assert 'id="cancel"' not in page and 'id="resume"' not in page


# --- publishing fails ---------------------------------------------------------------------


def test_unreachable_qstash_is_a_clear_502(app: App) -> None:
    """Start and resume publish: with QStash unreachable, a page saying so, no traceback."""
    flask_app, queue = app
    started(app, "live")
    client, csrf = signed_in(flask_app)
    closed = QStash("token", base_url=f"http://127.0.0.1:{free_port()}", retries=0)
    flask_app.extensions["qstash.client"] = closed
    try:
        form = {"csrf_token": csrf, "workflow": "order", "input": '{"order": "o"}'}
        response = client.post("/dashboard/runs/start", data=form)
        assert response.status_code == 502, text(response)[:500]
        assert "the run was not started" in text(response)
        assert "Traceback" not in text(response)
        response = client.post("/dashboard/runs/live/resume", data={"csrf_token": csrf})
        assert response.status_code == 502 and "the run was not resumed" in text(response)
        # Cancelling publishes nothing: it still works.
        response = client.post("/dashboard/runs/live/cancel", data={"csrf_token": csrf})
        assert response.status_code == 303
    finally:
        closed.close()
    assert run_state(flask_app, "live") == "cancelled"


def test_without_a_qstash_token_starting_says_what_is_missing(
    make_app: Callable[..., App], registry: JobRegistry
) -> None:
    """No publisher configured (no stub, no QSTASH_TOKEN): 503 naming the setting."""
    declare(registry)
    flask_app, queue = make_app(DASHBOARD_TOKEN=TOKEN)
    del flask_app.extensions["qstash.client"]
    client, csrf = signed_in(flask_app)
    form = {"csrf_token": csrf, "workflow": "order", "input": '{"order": "o"}'}
    response = client.post("/dashboard/runs/start", data=form)
    assert response.status_code == 503
    assert "QSTASH_TOKEN is not set" in text(response)
    assert queue.messages == []


def test_with_the_store_off_no_action_runs(
    make_app: Callable[..., App], registry: JobRegistry
) -> None:
    """Runs live in the store: without it, 503 saying so, and nothing published."""
    declare(registry)
    flask_app, queue = make_app(DASHBOARD_TOKEN=TOKEN, DELIVERY_LOG=False, DUPLICATE_GUARD=False)
    client = flask_app.test_client()
    assert 'id="start"' not in text(client.get("/dashboard/runs", headers=BEARER))
    form = {"workflow": "order", "input": '{"order": "o"}'}
    for path in ("/dashboard/runs/start", "/dashboard/runs/r/cancel", "/dashboard/runs/r/resume"):
        response = client.post(path, data=form, headers=BEARER)
        assert response.status_code == 503, path
        assert "workflows keep their runs in the store, which is off" in text(response)
    assert queue.messages == []


def test_the_forms_pass_the_csp(app: App) -> None:
    """No inline script or style in the pages with forms (the CSP would block them)."""
    flask_app, _ = app
    started(app, "live")
    client = flask_app.test_client()
    for path in ("/dashboard/runs", "/dashboard/runs/live"):
        html = text(client.get(path, headers=BEARER))
        assert "<script" not in html and "style=" not in html and "<style" not in html
