"""What ``flask dev`` prints: the refusal's reason on a delivery line, whole demo answers,
and an example payload the app's own schema accepts."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import Schema, fields

from app import create_app
from app.devserver.callbacks import Response
from app.devserver.cli import REASON_CHARS, one_line, reason
from app.devserver.delivery import AttemptEvent
from app.devserver.demo import ANSWER_CHARS, describe, example, welcome_email
from app.devserver.records import Message
from app.jobs import JobRegistry

SPEC = {"method": "POST", "url": "http://127.0.0.1:5000/api/jobs/send-email", "retries": 3}


def attempt(status: int | None, body: bytes, outcome: str = "dlq") -> AttemptEvent:
    message = Message("msg_1", SPEC, b"{}", 0, 0.0)
    return AttemptEvent(message, Response(status, {}, body), 3.0, outcome)


def test_a_489_shows_the_code_message_and_field_errors() -> None:
    """The framework's error JSON becomes 'code: message {errors}' on one line."""
    body = json.dumps(
        {
            "code": "invalid_payload",
            "status": 489,
            "message": "the payload does not match the job's schema",
            "errors": {"to": ["Not a valid email address."]},
        }
    ).encode()
    assert reason(attempt(489, body)) == (
        "invalid_payload: the payload does not match the job's schema"
        ' {"to": ["Not a valid email address."]}'
    )


def test_successes_and_empty_answers_have_no_reason() -> None:
    """A 2xx, an empty body or no HTTP answer at all adds nothing to the line."""
    assert reason(attempt(200, b'{"message": "fine"}', "delivered")) == ""
    assert reason(attempt(500, b"")) == ""
    assert reason(attempt(None, b"")) == ""


def test_a_plain_text_refusal_is_shown_as_text() -> None:
    """Any endpoint's non-JSON error page is shown, squeezed onto one line."""
    assert reason(attempt(502, b"<h1>Bad\n  gateway</h1>\n")) == "<h1>Bad gateway</h1>"


json_trees = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=25,
)
error_bodies = st.one_of(
    st.builds(
        lambda code, message, errors: json.dumps(
            {"code": code, "message": message, "errors": errors}
        ).encode(),
        st.text(),
        st.text(),
        json_trees,
    ),
    json_trees.map(lambda tree: json.dumps(tree).encode()),
    st.binary(max_size=2000),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=500).map(str.encode),
    st.sampled_from([b"\x1b]0;pwned\x07\x1b[2J", b"\r\x1b[1A\x1b[2Kfake line", "\u202e".encode()]),
)


@settings(max_examples=150)
@given(status=st.integers(300, 599), body=error_bodies)
def test_any_answer_becomes_one_bounded_printable_line(status: int, body: bytes) -> None:
    """Whatever an endpoint answers, the reason is one line with no control character."""
    found = reason(attempt(status, body))
    assert len(found) <= REASON_CHARS
    assert "\n" not in found and "\r" not in found and "\x1b" not in found
    assert all(char.isprintable() for char in found)


@settings(max_examples=80)
@given(tree=json_trees)
def test_demo_prints_a_whole_json_answer_never_a_cut_one(tree: Any) -> None:
    """A JSON answer that fits is printed whole (it parses back); a longer one is summarised."""
    body = json.dumps(tree, ensure_ascii=False).encode()
    line = describe(attempt(200, body, "delivered"))
    head, _, printed = line.partition(": ")
    assert head == "200 delivered"
    assert "\n" not in printed and all(char.isprintable() for char in printed)
    if len(json.dumps(tree)) > ANSWER_CHARS:
        assert printed == f"an answer of {len(body)} bytes"
    else:
        assert json.loads(printed) == tree


def test_deeply_nested_answers_do_not_break_the_listener() -> None:
    """JSON nested past Python's recursion limit is shown as text, not a crash."""
    deep = b"[" * 100_000 + b"]" * 100_000
    assert describe(attempt(200, deep, "delivered")).endswith(f"an answer of {len(deep)} bytes")
    assert reason(attempt(500, b'{"a":' * 20_000)).startswith('{"a":{"a":')


def test_demo_prints_the_process_image_answer_in_full() -> None:
    """The answer that used to be cut at 200 characters mid-JSON comes out whole."""
    outputs = [
        {"bytes": 426, "format": "webp", "height": 213, "key": f"demo/sample.png.{name}.webp"}
        for name in ("w320", "thumb", "full")
    ]
    body = json.dumps({"fileKey": "demo/sample.png", "userId": "u", "outputs": outputs}).encode()
    printed = describe(attempt(200, body, "delivered")).partition(": ")[2]
    assert len(body) > 200 and json.loads(printed)["outputs"] == outputs


def test_one_line_keeps_short_text_and_marks_a_cut() -> None:
    """Text within the limit is kept; longer text ends with an ellipsis at the limit."""
    assert one_line("a  b\tc", 10) == "a b c"
    assert one_line("x" * 20, 10) == "x" * 9 + "…"


class Needs(Schema):
    name = fields.String(required=True)


def _app(registry: JobRegistry) -> Any:
    return create_app({"TESTING": True, "QSTASH_DEV": True}, registry=registry)


def test_example_is_the_welcome_email_when_send_email_exists() -> None:
    """The bundled send-email gets a welcome payload its real schema accepts."""
    from jobs.email import SendEmailSchema

    registry = JobRegistry()
    registry.job("send-email", schema=SendEmailSchema)(lambda payload, delivery: {})
    found = example(_app(registry), "http://127.0.0.1:5001")
    assert found == ("send-email", welcome_email("http://127.0.0.1:5001"))
    SendEmailSchema().load(found[1])


def test_example_prefers_a_job_that_is_not_a_cron_job() -> None:
    """Without send-email: a job that takes {} and is not scheduled, never an invalid payload."""
    registry = JobRegistry()
    registry.job("needs-name", schema=Needs)(lambda payload, delivery: {})
    registry.cron("nightly", cron="0 9 * * *")(lambda payload, delivery: {})
    registry.job("ping")(lambda payload, delivery: {})
    assert example(_app(registry), "http://x") == ("ping", {})
    nothing_fits = JobRegistry()
    nothing_fits.job("needs-name", schema=Needs)(lambda payload, delivery: {})
    assert example(_app(nothing_fits), "http://x") is None
