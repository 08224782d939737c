"""``redact=Redact(...)``: validated where it is written, sent as ``Upstash-Redact-Fields``
in the form both official SDKs send, from a publish, a batch, a schedule or ``Job.enqueue``."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from app.jobs import JobRegistry
from app.qstash.client import PublishOptions, QStash, Redact, json_message
from app.qstash.client.options import publish_options
from tests.client.fake_qstash import FakeQStash

DEST = "https://jobs.example.com/api/jobs/send-email"


@pytest.mark.parametrize(
    ("redact", "header"),
    [
        (Redact(body=True), "body"),
        (Redact(headers=True), "header"),
        (Redact(body=True, headers=["Authorization"]), "body,header[Authorization]"),
        (Redact(headers=("A", "B", "A")), "header[A],header[B]"),
    ],
)
def test_the_header_value(redact: Redact, header: str) -> None:
    assert PublishOptions(redact=redact).headers_dict() == {"Upstash-Redact-Fields": header}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "redacts nothing"),
        ({"headers": []}, "redacts nothing"),
        ({"headers": "Authorization"}, "list of header names"),
        ({"headers": ["Bad Name"]}, "not a valid HTTP header name"),
        ({"headers": [""]}, "not a valid HTTP header name"),
        ({"body": "yes"}, "True or False"),
    ],
)
def test_a_bad_redact_is_a_value_error(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Redact(**values)


@pytest.mark.parametrize("value", [{"body": True}, True, "body"])
def test_redact_must_be_a_redact(value: Any) -> None:
    """The official SDK's dict is refused with a pointer to Redact, not half understood."""
    with pytest.raises(ValueError, match=r"redact must be a Redact\(body=\.\.\., headers=\.\.\.\)"):
        PublishOptions(redact=value)


def test_options_with_redact_stay_reusable() -> None:
    """A list of names is kept as a tuple: equal options are validated once and reused."""
    redact = Redact(headers=["Authorization"])
    assert redact.headers == ("Authorization",)
    same = Redact(headers=("Authorization",))
    assert publish_options(redact=redact) is publish_options(redact=same)


def test_batch_and_schedule_send_it(fake: FakeQStash, qstash: QStash) -> None:
    qstash.batch([json_message(DEST, {"n": 1}, redact=Redact(body=True))])
    assert fake.last().json()[0]["headers"]["Upstash-Redact-Fields"] == "body"
    qstash.create_schedule(DEST, "0 9 * * *", body="{}", redact=Redact(headers=["X-Key"]))
    assert fake.last().upstash["upstash-redact-fields"] == "header[X-Key]"


def test_job_enqueue_passes_it_on(app: Flask, fake: FakeQStash) -> None:
    registry: JobRegistry = app.extensions["qstash_jobs"]
    with app.app_context():
        registry["send-email"].enqueue(
            {"to": "a@example.com", "template": "welcome"},
            headers={"Authorization": "Bearer t"},
            redact=Redact(body=True, headers=["Authorization"]),
        )
    assert fake.last().upstash["upstash-redact-fields"] == "body,header[Authorization]"
