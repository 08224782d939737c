"""app.qstash.redact: credentials out of URLs wherever they are shown."""

from __future__ import annotations

import pytest

from app.devserver.callbacks import Response
from app.devserver.delivery import AttemptEvent
from app.devserver.records import Message
from app.qstash.redact import redact_url, scrub

PASSWORD = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pass@h.example/x", "http://***@h.example/x"),
        ("https://token@h.example:8443/", "https://***@h.example:8443/"),
        ("http://u:p@h@evil.example/", "http://***@evil.example/"),  # the last @ ends it
        ("http://h.example/a@b?c=d@e#f@g", "http://h.example/a@b?c=d@e#f@g"),
        ("http:\\\\u:p@h.example/", "http:\\\\***@h.example/"),
        ("http://@h.example/", "http://***@h.example/"),
        ("//u:p@h.example/", "//***@h.example/"),
        ("h.example/x", "h.example/x"),
        ("", ""),
        ("not a url at all", "not a url at all"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    """The userinfo, up to the authority's last @, becomes ***; the rest is kept as typed."""
    assert redact_url(url) == shown


def test_scrub_masks_the_credentials_however_they_were_copied() -> None:
    """As typed, percent-decoded, or the password alone: masked in any text."""
    url = "http://us%40er:p%40ss@h.example/"
    text = "failed for http://us%40er:p%40ss@h.example/ (password p@ss, raw p%40ss)"
    assert scrub(text, url) == "failed for http://***@h.example/ (password ***, raw ***)"
    assert scrub("nothing to hide", "http://h.example/") == "nothing to hide"


def test_dev_server_attempt_line_masks_the_destinations_credentials() -> None:
    """The dev server's one line per attempt names the destination as http://***@host."""
    spec = {"method": "POST", "url": f"http://user:{PASSWORD}@h.example/x", "retries": 3}
    message = Message("msg_1", spec, b"{}", 0, 0.0)
    line = AttemptEvent(message, Response(500, {}, b""), 12.0, "retry").line()
    assert "POST http://***@h.example/x attempt 1/4" in line
    assert PASSWORD not in line
