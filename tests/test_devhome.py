"""The dev landing page: mounted in dev mode only, loopback hosts only, outbox kept inside."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app
from app.devhome import OUTBOX_SHOWN, enqueue_command, second_terminal, set_example
from app.jobs import JobRegistry
from tests.conftest import TEST_CONFIG, Calls, make_registry

EMAIL = (
    b"From: a@example.com\r\nTo: ada@example.com\r\nSubject: Welcome, Ada\r\n"
    b"Content-Type: text/plain\r\n\r\nReset: https://app.example.com/reset/secret-token\r\n"
)


def dev_app(outbox: Path, registry: JobRegistry | None = None, **extra: Any) -> Flask:
    config = {"TESTING": True, "QSTASH_DEV": True, "EMAIL_OUTBOX": str(outbox), **extra}
    return create_app(config, registry=registry or make_registry(Calls()))


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    folder = tmp_path / "outbox"
    folder.mkdir()
    (folder / "msg_1.eml").write_bytes(EMAIL)
    return folder


def test_landing_page_lists_jobs_outbox_and_links(outbox: Path) -> None:
    """/ shows every job with its URL and fields, the outbox's emails and the dev links."""
    app = dev_app(outbox)
    set_example(app, "resize", {"fileKey": "a.png"})
    page = app.test_client().get("/")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    for job in ("resize", "noop", "give-up", "later", "crash"):
        assert f"<strong>{job}</strong>" in text
    assert "http://127.0.0.1:5000/api/jobs/resize" in text and "fileKey (String, required)" in text
    assert "Welcome, Ada" in text and "ada@example.com" in text
    assert 'href="/dev/outbox/msg_1.eml"' in text and str(outbox.resolve()) in text
    assert "export QSTASH_DEV=1" in text
    assert (
        "flask --app wsgi jobs enqueue resize &#39;{&#34;fileKey&#34;: &#34;a.png&#34;}&#39;"
        in text
    )
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_landing_page_exists_only_in_dev_mode(outbox: Path) -> None:
    """Without QSTASH_DEV=1 there is no / and no outbox reader (production mounts neither)."""
    app = create_app({**TEST_CONFIG, "EMAIL_OUTBOX": str(outbox)}, registry=JobRegistry())
    client = app.test_client()
    assert client.get("/").status_code == 404
    assert client.get("/dev/outbox/msg_1.eml").status_code == 404


def test_outbox_email_is_shown_as_plain_text(outbox: Path) -> None:
    """An outbox email is served as text/plain (never rendered as HTML), byte for byte."""
    with dev_app(outbox).test_client().get("/dev/outbox/msg_1.eml") as response:
        assert response.status_code == 200
        assert response.mimetype == "text/plain" and response.data == EMAIL
        assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.nip.io", "10.0.0.5:5000", "[::2]"])
def test_only_loopback_hosts_are_answered(outbox: Path, host: str) -> None:
    """A DNS-rebinding page (Host: its own name) cannot read the page or the outbox."""
    client = dev_app(outbox).test_client()
    for path in ("/", "/dev/outbox/msg_1.eml"):
        with client.get(path, headers={"Host": host}) as response:
            assert response.status_code == 404
    for host in ("localhost:5000", "127.0.0.1", "[::1]:5000"):
        assert client.get("/", headers={"Host": host}).status_code == 200


hostile_names = st.one_of(
    st.builds(
        lambda parts, tail: "/".join(parts) + tail,
        st.lists(st.sampled_from(["..", ".", "%2e%2e", "..%2f", "etc", "", "~"]), max_size=5),
        st.sampled_from(["/passwd", "/secret.eml", ".eml", "/../secret.eml", "%00.eml"]),
    ),
    st.text(alphabet="./\\%0a~\x00", max_size=12).map(lambda text: text + ".eml"),
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=hostile_names)
def test_outbox_reader_never_leaves_the_outbox(tmp_path: Path, name: str) -> None:
    """No name reaches a file outside the outbox, however it is spelled or encoded."""
    outbox = tmp_path / "box" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (tmp_path / "box" / "secret.eml").write_bytes(b"SECRET")
    (outbox / "inside.eml").write_bytes(EMAIL)
    client = dev_app(outbox).test_client()
    with client.get(f"/dev/outbox/{name}") as response:
        assert b"SECRET" not in response.data
        assert response.status_code in (200, 308, 400, 404)
        if response.status_code == 200:
            assert response.data == EMAIL  # only ever a file that is in the outbox


def test_outbox_listing_is_bounded_and_newest_first(tmp_path: Path) -> None:
    """A large outbox lists only the newest OUTBOX_SHOWN emails, and says how many there are."""
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    for number in range(OUTBOX_SHOWN + 5):
        path = outbox / f"msg_{number:03}.eml"
        path.write_bytes(EMAIL.replace(b"Ada", f"Ada {number}".encode()))
        os.utime(path, (1_000_000 + number, 1_000_000 + number))
    (outbox / "notes.txt").write_text("not an email")
    text = dev_app(outbox).test_client().get("/").get_data(as_text=True)
    assert f"The {OUTBOX_SHOWN} newest of {OUTBOX_SHOWN + 5}" in text
    assert "msg_024.eml" in text and "msg_005.eml" in text and "msg_004.eml" not in text
    assert text.index("msg_024.eml") < text.index("msg_023.eml")
    assert "notes.txt" not in text


def test_missing_outbox_and_odd_files_do_not_break_the_page(tmp_path: Path) -> None:
    """No outbox yet, a binary .eml, a folder named .eml: the page still answers 200."""
    app = dev_app(tmp_path / "missing")
    assert "No email yet" in app.test_client().get("/").get_data(as_text=True)
    outbox = tmp_path / "outbox"
    (outbox / "folder.eml").mkdir(parents=True)
    (outbox / "binary.eml").write_bytes(bytes(range(256)) * 100)
    assert dev_app(outbox).test_client().get("/").status_code == 200


def test_landing_page_escapes_what_jobs_and_emails_say(tmp_path: Path) -> None:
    """A subject or job description carrying HTML is shown as text, not markup."""
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "x.eml").write_bytes(b"Subject: <script>alert(1)</script>\r\n\r\nbody")
    registry = JobRegistry()
    registry.job("odd", description="<img src=x onerror=alert(1)>")(lambda payload, d: {})
    text = dev_app(outbox, registry).test_client().get("/").get_data(as_text=True)
    assert "<script>alert(1)" not in text and "&lt;script&gt;" in text
    assert "<img src=x" not in text


def test_second_terminal_line_names_only_what_dev_mode_does_not_imply() -> None:
    """Default ports: QSTASH_DEV=1 alone; other ports: QSTASH_URL and APP_URL too."""
    assert second_terminal({"QSTASH_URL": "http://127.0.0.1:8080"}) == "export QSTASH_DEV=1"
    other = {"QSTASH_URL": "http://127.0.0.1:8081", "APP_URL": "http://127.0.0.1:5001"}
    assert second_terminal(other) == (
        "export QSTASH_DEV=1 QSTASH_URL=http://127.0.0.1:8081 APP_URL=http://127.0.0.1:5001"
    )


@settings(max_examples=50)
@given(
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=8), children, max_size=3)
        ),
        max_leaves=10,
    )
)
def test_enqueue_command_quotes_any_payload_for_the_shell(payload: Any) -> None:
    """The printed command hands the exact JSON to flask, whatever quotes the payload holds."""
    import json
    import shlex

    words = shlex.split(enqueue_command("some-job", payload))
    assert words[:5] == ["flask", "--app", "wsgi", "jobs", "enqueue"]
    assert words[5] == "some-job" and json.loads(words[6]) == payload and len(words) == 7
