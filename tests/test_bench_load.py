"""bench/_load.py's wrk script sends exactly the body and headers it was given."""

from __future__ import annotations

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench._load import post_script, wrk

# What a Lua long string ([[...]]) or a plain "..." would mangle: ]], quotes, a backslash
# before a digit, a newline first, bytes outside ASCII.
BODY = b'\n{"a": "]]", "b": "\\"\\\\1"}\r\n\x00\xff\xc3\xa9'
HEADERS = {"Content-Type": "application/json", "X-Token": 'v1,a"b\\c]]', "Upstash-Retried": "0"}


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_post_script_sends_the_body_and_headers_as_given(tmp_path: Path) -> None:
    seen: list[tuple[str, bytes, dict[str, str]]] = []

    class Record(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if len(seen) < 20:
                seen.append((self.command, body, dict(self.headers)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Record)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        assert wrk(url, post_script(tmp_path / "request.lua", BODY, HEADERS), 1) > 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert seen
    for method, body, headers in seen:
        assert (method, body) == ("POST", BODY)
        assert {name: headers[name] for name in HEADERS} == HEADERS
