"""``flask qstash dev`` and ``flask dev --demo`` as a user runs them, with no app configured."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from qstash import QStash

from app.config import DEV_IDENTITY
from tests.devserver.endpoint import Endpoint
from tests.devserver.processes import start_dev_server, start_flask
from tests.servers import free_port, stop

pytestmark = pytest.mark.e2e


def wait_for_text(log: Path, text: str, timeout: float = 30) -> str:
    """Wait until ``log`` contains ``text``; return the whole log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = log.read_text(errors="replace") if log.exists() else ""
        if text in output:
            return output
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not printed within {timeout}s:\n{output}")


def test_qstash_dev_prints_env_block_and_one_line_per_attempt(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    """The env block carries the dev identity; each attempt prints id, URL, attempt, status."""
    port, log = free_port(), tmp_path / "dev.log"
    process = start_dev_server(port, tmp_path / "q.db", log)
    try:
        output = wait_for_text(log, "One line per delivery attempt")
        assert f"QSTASH_URL=http://127.0.0.1:{port}" in output
        for name in ("QSTASH_TOKEN", "QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY"):
            assert f"{name}={DEV_IDENTITY[name]}" in output
        response = httpx.post(
            f"http://127.0.0.1:{port}/v2/publish/{endpoint.url('/hello')}",
            headers={"Authorization": f"Bearer {DEV_IDENTITY['QSTASH_TOKEN']}"},
        )
        message_id = response.json()["messageId"]
        line = next(ln for ln in wait_for_text(log, "delivered").splitlines() if message_id in ln)
        assert endpoint.url("/hello") in line and "attempt 1/4" in line and "200" in line
    finally:
        stop(process)


def test_the_printed_environment_finds_the_server_with_each_official_sdk(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    """On a port other than 8080, the banner's variables alone let qstash (PyPI) and
    @upstash/qstash in dev mode publish to the server: with QSTASH_DEV=1 the JS SDK ignores
    QSTASH_URL and looks on 127.0.0.1:QSTASH_DEV_PORT (8080 without it, where it finds
    nothing and tries to download Upstash's binary; the script refuses that)."""
    js = Path(__file__).parent / "js"
    node = shutil.which("node")
    if node is None or not (js / "node_modules" / "@upstash" / "qstash").is_dir():
        pytest.skip("the JS SDK needs Node.js and `npm ci --prefix tests/devserver/js`")
    port, log = free_port(), tmp_path / "dev.log"
    process = start_dev_server(port, tmp_path / "q.db", log)
    try:
        output = wait_for_text(log, "One line per delivery attempt")
        printed = dict(re.findall(r"^(QSTASH_[A-Z_]+)=(\S+)$", output, re.MULTILINE))
        with pytest.MonkeyPatch.context() as patch:  # QStash(token) reads QSTASH_URL itself
            patch.setenv("QSTASH_URL", printed["QSTASH_URL"])
            sdk = QStash(printed["QSTASH_TOKEN"], retry=False)
            sdk.message.publish_json(url=endpoint.url("/python"), body={})
        endpoint.wait_for("/python", 1)
        unset = ("QSTASH_", "NODE_ENV")
        env = {k: v for k, v in os.environ.items() if not k.startswith(unset)} | printed
        done = subprocess.run(
            [node, "devmode.mjs"], cwd=js, env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        stop(process)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"delivered": True, "verified": True, "refused": []}, done.stdout


def test_flask_dev_demo_runs_every_job_kind(tmp_path: Path) -> None:
    """flask dev --demo runs the real send-email, process-image and deliver-webhook jobs,
    and one onboard-user workflow run to completion (its waits cut to seconds)."""
    log = tmp_path / "demo.log"
    env = {
        "STORAGE_ROOT": str(tmp_path / "storage"),
        "EMAIL_OUTBOX": str(tmp_path / "outbox"),
    }
    args = ["dev", "--demo", "--port", "0", "--qstash-port", "0", "--db", str(tmp_path / "q.db")]
    process = start_flask(args, log, env)
    try:
        output = wait_for_text(log, "demo: done")
    finally:
        stop(process)
    for job in ("send-email", "process-image", "deliver-webhook"):
        assert f"demo: {job}: 200 delivered" in output, output
    # send-email's, then the run's welcome and follow-up emails
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 3
    assert list((tmp_path / "storage" / "demo").glob("sample*.w320.webp"))
    assert re.search(r"webhook receiver at \S+ got 1 call\(s\)", output), output
    steps = "settings, welcome-email, quiet-period, upgraded, follow-up-email, tell-crm"
    assert re.search(rf"demo: onboard-user: completed in [\d.]+s: {steps} -> ", output), output
    assert '"crmStatus":200' in output, output
    assert re.search(r"CRM receiver at \S+ got 1 call\(s\)", output), output
    assert "curl -X POST" in output


def test_flask_dev_shows_how_to_enqueue_without_enqueuing(tmp_path: Path) -> None:
    """Without --demo, flask dev prints how to enqueue and delivers nothing by itself."""
    log = tmp_path / "dev.log"
    args = ["dev", "--port", "0", "--qstash-port", "0", "--db", str(tmp_path / "q.db")]
    process = start_flask(args, log, {"STORAGE_ROOT": str(tmp_path / "storage")})
    try:
        output = wait_for_text(log, "Ctrl-C stops")
        time.sleep(0.3)
    finally:
        stop(process)
    assert "Authorization: Bearer" in output and "/api/jobs/" in output
    assert re.search(r"QSTASH_DEV=1 QSTASH_DEV_PORT=\d+", output), output
    assert "demo:" not in log.read_text() and "attempt 1/" not in log.read_text()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    """A taken port ends with a one-line error naming --port, not a traceback."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "dev.log"
        process = start_flask(
            ["qstash", "dev", "--port", str(port), "--db", str(tmp_path / "q.db")], log
        )
        assert process.wait(timeout=30) == 1
    output = log.read_text()
    assert f"cannot listen on 127.0.0.1:{port}" in output and "--port" in output
    assert "Traceback" not in output
