"""``POST /api/workflows/events/<id>``: signed or bearer-token notifications, and nothing else.

Hypothesis sends event ids, bodies and credentials of its choosing: every answer is the
framework's JSON with one of the documented statuses, never a 500, and only a caller
with a valid signature or the token reaches ``notify``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from app import create_app
from app.errors import ConfigurationError
from app.jobs import JobRegistry
from app.qstash.protocol import NON_RETRYABLE_HEADER
from app.testing import StubQueue, delivery_headers
from app.workflows import Workflow, get_run, workflow
from app.workflows.endpoints import EVENTS_PATH, event_url
from tests.conftest import APP_URL, TEST_CONFIG
from tests.workflows.runs import deliver_due

TOKEN = "a-notify-token-of-some-length"
MAX_BODY = 2048


def waiting_registry() -> JobRegistry:
    jobs = JobRegistry()

    @workflow("confirm", registry=jobs)
    def confirm(ctx: Any, payload: Any) -> Any:
        return {"got": ctx.wait_for_event("confirmed", payload["event"], timeout="7d")}

    return jobs


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def path_of(app: Flask, event_id: str) -> str:
    with app.app_context():
        return event_url(event_id)[len(APP_URL) :]


def signed_post(app: Flask, event_id: str, body: bytes, **headers: str) -> TestResponse:
    path = path_of(app, event_id)
    sent = delivery_headers(app, path, body, headers=headers)
    return app.test_client().post(path, data=body, headers=sent)


def token_post(app: Flask, event_id: str, body: bytes, token: str = TOKEN) -> TestResponse:
    return app.test_client().post(path_of(app, event_id), data=body, headers=bearer(token))


@pytest.fixture
def waiting(
    make_app: Callable[..., tuple[Flask, StubQueue]], registry: JobRegistry
) -> tuple[Flask, StubQueue, str]:
    """An app with a token and one run waiting for the event ``order:42``."""
    for job in waiting_registry():
        registry.add(job)
    app, queue = make_app(WORKFLOW_NOTIFY_TOKEN=TOKEN)
    confirm = registry["confirm"]
    assert isinstance(confirm, Workflow)
    with app.app_context():
        run_id = confirm.start({"event": "order:42"})
    deliver_due(app, queue)
    with app.app_context():
        assert get_run(run_id).state == "waiting"
    return app, queue, run_id


def _output(app: Flask, run_id: str) -> Any:
    with app.app_context():
        run = get_run(run_id)
    assert run.state == "completed", run
    return json.loads(run.output or "null")


def test_bearer_token_resumes_the_waiting_run(waiting: tuple[Flask, StubQueue, str]) -> None:
    """With the token, the event is notified: the answer names the run, which then ends."""
    app, queue, run_id = waiting
    response = token_post(app, "order:42", b'{"paid": true}')
    assert response.status_code == 200
    assert response.get_json() == {"event": "order:42", "resumed": [run_id]}
    deliver_due(app, queue)
    assert _output(app, run_id) == {"got": {"paid": True}}


def test_signed_notification_resumes_the_waiting_run(
    waiting: tuple[Flask, StubQueue, str],
) -> None:
    """A QStash-signed POST to event_url() notifies without the token."""
    app, queue, run_id = waiting
    response = signed_post(app, "order:42", b"[1, 2]")
    assert response.status_code == 200
    assert response.get_json() == {"event": "order:42", "resumed": [run_id]}
    deliver_due(app, queue)
    assert _output(app, run_id) == {"got": [1, 2]}


@pytest.mark.parametrize(("body", "data"), [(b"", {}), (b" \n", {}), (b"null", None)])
def test_empty_body_is_no_data(
    waiting: tuple[Flask, StubQueue, str], body: bytes, data: Any
) -> None:
    """No body is no data, which the wait gets as {} (as from notify(id)); null is None."""
    app, queue, run_id = waiting
    assert token_post(app, "order:42", body).get_json()["resumed"] == [run_id]
    deliver_due(app, queue)
    assert _output(app, run_id) == {"got": data}


def test_signed_retry_is_answered_once(waiting: tuple[Flask, StubQueue, str]) -> None:
    """QStash's retry of a notification (same message id) gets the first answer again."""
    app, queue, run_id = waiting
    first = signed_post(app, "order:42", b"1", **{"Upstash-Message-Id": "msg_notify_1"})
    again = signed_post(app, "order:42", b"1", **{"Upstash-Message-Id": "msg_notify_1"})
    assert first.get_json() == again.get_json() == {"event": "order:42", "resumed": [run_id]}
    assert len([m for m in queue.pending if m.due <= queue.clock]) == 1


def test_event_for_no_waiting_run_is_kept(waiting: tuple[Flask, StubQueue, str]) -> None:
    """An event nobody waits for yet resumes nothing, and says so."""
    app, _, _ = waiting
    response = token_post(app, "order:43", b"{}")
    assert response.status_code == 200
    assert response.get_json() == {"event": "order:43", "resumed": []}


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "no Upstash-Signature"),
        (bearer("a-wrong-token-of-some-length"), "Bearer <WORKFLOW_NOTIFY_TOKEN>"),
        (bearer(TOKEN + "x"), "Bearer <WORKFLOW_NOTIFY_TOKEN>"),
        (bearer(TOKEN[:-1]), "Bearer <WORKFLOW_NOTIFY_TOKEN>"),
        ({"Authorization": f"Basic {TOKEN}"}, "no Upstash-Signature"),
        # A signature, when present, is what is checked: the token does not excuse a bad one.
        ({"Upstash-Signature": "garbage", **bearer()}, "not a JWT"),
    ],
)
def test_without_credentials_nothing_is_notified(
    waiting: tuple[Flask, StubQueue, str], headers: dict[str, str], message: str
) -> None:
    """No signature and no (right) token: 401, and the run keeps waiting."""
    app, queue, run_id = waiting
    response = app.test_client().post(f"{EVENTS_PATH}/order:42", data=b"{}", headers=headers)
    assert response.status_code == 401
    assert message in response.get_json()["message"]
    assert [m for m in queue.pending if m.due <= queue.clock] == []
    with app.app_context():
        assert get_run(run_id).state == "waiting"


def test_without_a_configured_token_only_signed_calls_pass(
    make_app: Callable[..., tuple[Flask, StubQueue]], registry: JobRegistry
) -> None:
    """WORKFLOW_NOTIFY_TOKEN unset: a bearer token is refused, saying why; signed works."""
    for job in waiting_registry():
        registry.add(job)
    app, _ = make_app()
    response = token_post(app, "order:42", b"{}", token="")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "WORKFLOW_NOTIFY_TOKEN is not set" in response.get_json()["message"]
    assert signed_post(app, "order:42", b"{}").status_code == 200


@pytest.mark.parametrize(
    ("event_id", "body", "code"),
    [
        ("order:42", b'{"paid": tru', "invalid_json"),
        ("order:42", b"NaN", "invalid_json"),
        ("x" * 201, b"{}", "bad_event_id"),
        ("tab\there", b"{}", "bad_event_id"),
        ("order:42", b'"' + b"x" * (MAX_BODY - 1) + b'"', "payload_too_large"),
    ],
)
def test_bad_input_is_refused_clearly(
    make_app: Callable[..., tuple[Flask, StubQueue]],
    registry: JobRegistry,
    event_id: str,
    body: bytes,
    code: str,
) -> None:
    """Bad JSON, a bad event id or a body over the cap: 489 signed (no retry), 400/413 else."""
    for job in waiting_registry():
        registry.add(job)
    app, queue = make_app(WORKFLOW_NOTIFY_TOKEN=TOKEN, QSTASH_MAX_BODY_SIZE=MAX_BODY)
    signed = signed_post(app, event_id, body)
    assert signed.status_code == 489
    assert signed.headers[NON_RETRYABLE_HEADER] == "true"
    assert signed.get_json()["code"] == code
    with_token = token_post(app, event_id, body)
    assert with_token.status_code == (413 if code == "payload_too_large" else 400)
    assert with_token.get_json()["code"] == code
    assert queue.messages == []


def test_a_short_token_stops_the_app(tmp_path: Path) -> None:
    """A guessable WORKFLOW_NOTIFY_TOKEN is refused when the app is created."""
    config = {**TEST_CONFIG, "DATABASE_URL": f"sqlite:///{tmp_path}/s.sqlite3"}
    with pytest.raises(ConfigurationError, match="at least 16 characters"):
        create_app({**config, "WORKFLOW_NOTIFY_TOKEN": "short"}, registry=waiting_registry())


def test_no_workflow_no_endpoint(make_app: Callable[..., tuple[Flask, StubQueue]]) -> None:
    """An app without workflows has no notification endpoint (404, the JSON error)."""
    app, _ = make_app(WORKFLOW_NOTIFY_TOKEN=TOKEN)
    response = token_post(app, "order:42", b"{}")
    assert response.status_code == 404
    assert response.get_json()["code"] == "not_found"


# --- hostile input -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    folder = tmp_path_factory.mktemp("notify")
    config = {
        **TEST_CONFIG,
        "DATABASE_URL": f"sqlite:///{folder}/n.sqlite3",
        "WORKFLOW_NOTIFY_TOKEN": TOKEN,
        "QSTASH_MAX_BODY_SIZE": MAX_BODY,
    }
    app = create_app(config, registry=waiting_registry())
    StubQueue.install(app)
    yield app
    store = app.extensions.get("qstash_jobs.store")
    if store is not None:
        store.close()


EVENT_IDS = st.text(max_size=210) | st.sampled_from(["", ".", "..", "/x", "a//b", "%2F", "a?b"])
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
#: (body, whether it is JSON the endpoint must take); raw bytes may or may not be.
BODIES = st.tuples(JSON_VALUES.map(lambda value: json.dumps(value).encode()), st.just(True)) | (
    st.tuples(st.binary(max_size=64) | st.just(b"x" * (MAX_BODY + 1)), st.none())
)
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60)
CREDENTIALS = st.sampled_from(["signed", "token", "none"]) | HEADER_TEXT.map(
    lambda text: f"Bearer {text}"
)


def _valid_id(event_id: str) -> bool:
    return 0 < len(event_id) <= 200 and event_id.isprintable()


def _routable(event_id: str) -> bool:
    # Paths with an empty or dot segment are redirected or normalised by routing, and the
    # path converter's pattern (.) stops at a newline: 404, as for any unknown URL.
    segments = event_id.split("/")
    return "\n" not in event_id and all(s not in ("", ".", "..") for s in segments)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_id=EVENT_IDS, body=BODIES, credentials=CREDENTIALS, noise=HEADER_TEXT)
def test_hostile_notifications_get_clear_answers(
    hostile_app: Flask,
    event_id: str,
    body: tuple[bytes, bool | None],
    credentials: str,
    noise: str,
) -> None:
    """Any id, body and credentials: a documented status and JSON, never a 500; only a
    signed or token-bearing call with a valid id and JSON body notifies, echoing the id."""
    app = hostile_app
    raw, is_json = body
    path = path_of(app, event_id)
    headers = {"X-Noise": noise, "Upstash-Retried": noise}
    if credentials == "signed":
        headers = delivery_headers(app, path, raw, headers=headers)
    elif credentials == "token":
        headers.update(bearer())
    elif credentials != "none":
        headers["Authorization"] = credentials
    response = app.test_client().post(path, data=raw, headers=headers)
    status = response.status_code
    if not _routable(event_id):
        assert status in (200, 308, 400, 401, 404, 413, 489), status
        return
    assert response.is_json, (status, response.data[:200])
    answer = response.get_json()
    authorized = credentials in ("signed", "token") or credentials == f"Bearer {TOKEN}"
    if not authorized:
        # The receiver reads (and caps) the body before it checks a signature.
        assert status == 401 or answer["code"] == "payload_too_large", answer
        return
    if status == 200:
        assert _valid_id(event_id) and is_json is not False
        assert answer == {"event": event_id, "resumed": []}
        return
    assert status in (400, 413, 489), answer
    # Checked in order: the body's size, its JSON, the event id.
    if len(raw) > MAX_BODY:
        assert answer["code"] == "payload_too_large"
    elif is_json:
        assert not _valid_id(event_id) and answer["code"] == "bad_event_id", answer
    elif not _valid_id(event_id):
        assert answer["code"] in ("invalid_json", "bad_event_id"), answer
    else:
        assert not is_json and answer["code"] in ("invalid_json", "payload_too_large"), answer
