"""A newcomer's first session, typed as the README and ``flask dev``'s banner say.

Every command runs in a subprocess through ``bash -c``, with the project's venv first on
``PATH``, in a folder holding only ``wsgi.py`` (a fresh clone's entry point), and with no
``QSTASH_*`` or ``FLASK_*`` variable set: what a user has in a new terminal. The lines
pasted from the banner are the banner's own, character for character.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, free_port, stop

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
WELCOME = (
    '{"to": "newcomer@example.com", "template": "welcome",'
    ' "data": {"name": "Newcomer", "loginUrl": "http://127.0.0.1:5000/login"}}'
)
#: The README's commands after the Quickstart; each is run below exactly as written.
README_COMMANDS = [
    "flask --app wsgi --help",
    "flask --app wsgi jobs list",
    "export QSTASH_DEV=1",
    f"flask --app wsgi jobs enqueue send-email '{WELCOME}'",
]


def newcomer_env(home: Path) -> dict[str, str]:
    """Return a new terminal's environment: the venv on PATH, nothing of this project's."""
    env = {
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }
    if "TMPDIR" in os.environ:
        env["TMPDIR"] = os.environ["TMPDIR"]
    return env


def sh(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as a user types it into bash."""
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def wait_for(log: Path, pattern: str, timeout: float = 30) -> re.Match[str]:
    """Wait until ``log`` has a line matching ``pattern``; return the match."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        found = re.search(pattern, text, re.MULTILINE)
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not printed within {timeout}s:\n{text}")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of this module's session: the clone, its outbox, storage and database."""
    return tmp_path_factory.mktemp("newcomer")


@pytest.fixture(scope="module")
def clone(home: Path) -> Path:
    """A working folder with the fresh clone's entry point, and the app's files kept in it."""
    folder = home / "clone"
    folder.mkdir()
    shutil.copy(ROOT / "wsgi.py", folder)
    return folder


@pytest.fixture(scope="module")
def env(home: Path) -> dict[str, str]:
    """The newcomer's environment; the app's state goes under ``home``, not the checkout."""
    return {
        **newcomer_env(home),
        # The app's instance folder is the checkout's: keep this test's files out of it.
        "EMAIL_OUTBOX": str(home / "outbox"),
        "STORAGE_ROOT": str(home / "storage"),
        "DATABASE_URL": f"sqlite:///{home / 'jobs.sqlite3'}",
    }


@pytest.fixture(scope="module")
def flask_dev(clone: Path, env: dict[str, str]) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """``flask --app wsgi dev`` in the first terminal (on free ports: others may run)."""
    log = clone / "dev.log"
    command = f"exec flask --app wsgi dev --port {free_port()} --qstash-port {free_port()}"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            ["bash", "-c", command], cwd=clone, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        wait_for(log, r"Ctrl-C stops")
        yield log, process
    finally:
        stop(process)


def banner_line(log: Path, starts: str) -> str:
    """Return the banner's line that starts with ``starts`` (after indentation)."""
    return wait_for(log, rf"^\s*({re.escape(starts)}.*)$").group(1)


def test_commands_that_serve_nothing_run_without_any_configuration(
    clone: Path, env: dict[str, str]
) -> None:
    """flask --help and flask jobs list work in a new terminal: no key, no QSTASH_DEV."""
    helped = sh("flask --app wsgi --help", clone, env)
    assert helped.returncode == 0, helped.stderr
    for command in ("dev", "jobs", "qstash", "run"):
        assert re.search(rf"^\s+{command}\s", helped.stdout, re.MULTILINE), helped.stdout
    assert "Traceback" not in helped.stderr and "refusing" not in helped.stderr
    listed = sh("flask --app wsgi jobs list", clone, env)
    assert listed.returncode == 0, listed.stderr
    assert "send-email  /api/jobs/send-email" in listed.stdout
    assert "payload: to (" in listed.stdout


def test_serving_still_refuses_without_keys(clone: Path, env: dict[str, str]) -> None:
    """flask run, unlike the commands above, needs the keys: it would answer deliveries."""
    ran = sh("flask --app wsgi run --port 0", clone, env)
    assert ran.returncode == 4
    assert "QSTASH_CURRENT_SIGNING_KEY, QSTASH_NEXT_SIGNING_KEY, APP_URL not set" in ran.stderr


def test_enqueue_without_dev_mode_says_what_to_set(clone: Path, env: dict[str, str]) -> None:
    """Enqueuing with nothing configured is one line naming APP_URL and QSTASH_DEV=1."""
    done = sh(f"flask --app wsgi jobs enqueue send-email '{WELCOME}'", clone, env)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: APP_URL is not set") and "QSTASH_DEV=1" in done.stderr
    assert "Traceback" not in done.stderr


def test_second_terminal_joins_flask_dev_as_the_banner_says(
    clone: Path,
    env: dict[str, str],
    flask_dev: tuple[Path, subprocess.Popen[bytes]],
    home: Path,
) -> None:
    """The banner's export + enqueue lines, pasted as they are, deliver a welcome email."""
    log, _ = flask_dev
    join, enqueue = banner_line(log, "export QSTASH_DEV=1"), banner_line(log, "flask --app wsgi")
    pasted = sh(f"{join.split('#')[0]}\n{enqueue}", clone, env)
    assert pasted.returncode == 0, pasted.stderr
    message_id = pasted.stdout.strip()
    assert re.fullmatch(r"msg_\w+", message_id)
    wait_for(log, rf"{message_id} POST \S+/api/jobs/send-email attempt 1/\d+ → 200 .*delivered")
    assert (home / "outbox" / f"{message_id}.eml").is_file()
    assert f"emails are written to {home / 'outbox'}" in log.read_text()
    # The delivery is said once: no Werkzeug access line repeats it.
    assert '"POST /api/jobs/' not in log.read_text()


def test_readme_commands_work_through_dotenv(
    clone: Path, env: dict[str, str], flask_dev: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    """The README's commands, with the dev ports in .env (read by every flask command)."""
    log, _ = flask_dev
    join = banner_line(log, "export QSTASH_DEV=1").split("#")[0].strip()
    dotenv = clone / ".env"
    dotenv.write_text(join.removeprefix("export ").replace(" ", "\n") + "\n")
    try:
        done = sh("\n".join(README_COMMANDS), clone, env)
    finally:
        dotenv.unlink()
    assert done.returncode == 0, done.stderr
    message_id = done.stdout.strip().splitlines()[-1]
    assert "send-email  http://127.0.0.1:" in done.stdout  # jobs list with APP_URL from .env
    wait_for(log, rf"{message_id} .* → 200 .*delivered")
    assert "PUBLIC" not in done.stderr  # no dev-key warning from commands that serve nothing


def test_readme_shows_the_commands_this_test_runs() -> None:
    """The README shows these very commands, so the test checks what a newcomer reads."""
    readme = (ROOT / "README.md").read_text()
    for command in README_COMMANDS:
        assert command in readme, command


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_banner_curl_line_works_and_a_refusal_shows_its_reason(
    clone: Path, env: dict[str, str], flask_dev: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    """The printed curl command delivers as pasted; a bad payload's 489 line says why."""
    log, _ = flask_dev
    text = log.read_text()
    curl = text[text.index("  curl -X POST") : text.index("One line per delivery")]
    pasted = sh(curl, clone, env)
    assert pasted.returncode == 0, pasted.stderr
    message_id = re.search(r'"messageId": "(msg_\w+)"', pasted.stdout)
    assert message_id, pasted.stdout
    wait_for(log, rf"{message_id.group(1)} .* → 200 .*delivered")
    bad = re.sub(r"-d '.*'", """-d '{"to": "nobody", "template": "welcome"}'""", curl)
    refused = re.search(r'"messageId": "(msg_\w+)"', sh(bad, clone, env).stdout)
    assert refused
    line = wait_for(log, rf"^.*{refused.group(1)} .* → 489 .*$").group(0)
    assert "dlq" in line and "invalid_payload" in line and "Not a valid email address" in line


def test_landing_page_links_jobs_outbox_previews_and_dashboard(
    flask_dev: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    """/, /dashboard/ (with the printed token) and /dev/emails/ answer under flask dev."""
    log, _ = flask_dev
    app_url = wait_for(log, r"App on (http://127\.0\.0\.1:\d+)").group(1)
    token = wait_for(log, r"/dashboard/  sign in with (\S+)").group(1)
    page = httpx.get(f"{app_url}/")
    assert page.status_code == 200
    for link in ('href="/dev/emails/"', 'href="/dashboard/"', 'href="#outbox"', "send-email"):
        assert link in page.text
    assert httpx.get(f"{app_url}/dev/emails/").status_code == 200
    dashboard = httpx.get(f"{app_url}/dashboard/", headers={"Authorization": f"Bearer {token}"})
    assert dashboard.status_code == 200 and "check-expiries" in dashboard.text


def test_taken_qstash_port_names_the_qstash_port_option(clone: Path, env: dict[str, str]) -> None:
    """When the dev server's port is taken, the hint is --qstash-port, the option that exists."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = sh(f"flask --app wsgi dev --port 0 --qstash-port {port}", clone, env)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "choose another --qstash-port" in done.stderr and "Traceback" not in done.stderr
