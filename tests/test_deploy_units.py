"""deploy/Procfile and deploy/qstash-jobs.service, run as their platform would run them.

The systemd unit's [Service] settings are read from the file and applied by hand (no
systemd here): its EnvironmentFile and Environment lines, WorkingDirectory, ExecStart,
Type=notify through a NOTIFY_SOCKET, ExecReload's SIGHUP, a SIGTERM stop within
TimeoutStopSec, and the exit status RestartPreventExitStatus names for a bad config.
Paths under /srv/qstash-jobs map to this checkout and its venv, /var/lib/qstash-jobs
(StateDirectory) to a temporary folder.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import CURRENT_KEY, NEXT_KEY
from tests.servers import ROOT, free_port, stop

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
UNIT = ROOT / "deploy" / "qstash-jobs.service"
KEYS = {
    "QSTASH_CURRENT_SIGNING_KEY": CURRENT_KEY,
    "QSTASH_NEXT_SIGNING_KEY": NEXT_KEY,
    "APP_URL": "https://jobs.example.com",
}


def service_settings() -> list[tuple[str, str]]:
    """Return the unit's [Service] lines as (key, value), repeated keys kept in order."""
    settings, section = [], None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.append((key.strip(), value.strip()))
    return settings


def setting(name: str) -> str:
    [value] = [value for key, value in service_settings() if key == name]
    return value


def local(path: str, state: Path) -> str:
    """Map the unit's absolute paths onto this checkout, its venv and a state folder."""
    return (
        path.replace("/srv/qstash-jobs/.venv/bin", str(BIN))
        .replace("/srv/qstash-jobs", str(ROOT))
        .replace("/var/lib/qstash-jobs", str(state))
    )


def unit_env(env_file: Path, state: Path, notify: Path, port: int) -> dict[str, str]:
    """Return the environment systemd would give ExecStart (plus a loopback-only bind)."""
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "NOTIFY_SOCKET": str(notify)}
    for line in env_file.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    for key, value in service_settings():
        if key == "Environment":
            name, _, assigned = value.partition("=")
            env[name] = local(assigned, state)
    # The unit binds gunicorn.conf.py's default 127.0.0.1:8000; a free port here instead.
    env["GUNICORN_CMD_ARGS"] = f"--bind 127.0.0.1:{port} --workers 2"
    return env


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    """A NOTIFY_SOCKET like systemd's: a Unix datagram socket gunicorn reports to."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    try:
        yield path, sock
    finally:
        sock.close()


def start_unit(env: dict[str, str], state: Path) -> subprocess.Popen[bytes]:
    (state / "log").parent.mkdir(parents=True, exist_ok=True)
    with (state / "log").open("ab") as sink:
        return subprocess.Popen(
            shlex.split(local(setting("ExecStart"), state)),
            cwd=local(setting("WorkingDirectory"), state),
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def test_systemd_unit_starts_notifies_reloads_and_stops(
    tmp_path: Path, notify: tuple[Path, socket.socket]
) -> None:
    """Type=notify gets READY=1 once gunicorn serves; HUP reloads; TERM stops in time."""
    state, env_file, port = tmp_path / "state", tmp_path / "qstash-jobs.env", free_port()
    state.mkdir()
    env_file.write_text("".join(f"{key}={value}\n" for key, value in KEYS.items()))
    assert setting("Type") == "notify" and setting("ExecReload") == "/bin/kill -s HUP $MAINPID"
    process = start_unit(unit_env(env_file, state, notify[0], port), state)
    try:
        assert b"READY=1" in notify[1].recv(4096), (state / "log").read_text()
        health = httpx.get(f"http://127.0.0.1:{port}/healthz")
        assert health.json()["signing"] == "keys"
        # The store lives where the unit's Environment lines say (the StateDirectory).
        assert (state / "qstash-jobs.sqlite3").exists()
        process.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert process.poll() is None
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=float(setting("TimeoutStopSec"))) == 0
        assert time.monotonic() - started < float(setting("TimeoutStopSec"))
    finally:
        stop(process)


def test_systemd_unit_does_not_restart_a_placeholder_config(
    tmp_path: Path, notify: tuple[Path, socket.socket]
) -> None:
    """The README's sig_... placeholders exit with the status the unit won't restart."""
    state, env_file = tmp_path / "state", tmp_path / "qstash-jobs.env"
    state.mkdir()
    env_file.write_text(
        "QSTASH_CURRENT_SIGNING_KEY=sig_...\nQSTASH_NEXT_SIGNING_KEY=sig_...\n"
        "APP_URL=https://jobs.example.com\n"
    )
    process = start_unit(unit_env(env_file, state, notify[0], free_port()), state)
    try:
        status = process.wait(timeout=30)
    finally:
        stop(process)
    assert str(status) in setting("RestartPreventExitStatus").split()
    assert "QSTASH_CURRENT_SIGNING_KEY is a placeholder" in (state / "log").read_text()


def test_procfile_web_process_binds_the_platforms_port(tmp_path: Path) -> None:
    """web: binds 0.0.0.0:$PORT (a container's or platform's port) and serves the app."""
    [command] = [
        line.partition(":")[2].strip()
        for line in (ROOT / "deploy" / "Procfile").read_text().splitlines()
        if line.startswith("web:")
    ]
    env = {"PATH": f"{BIN}:{os.environ['PATH']}", "PORT": "4321", **KEYS}
    printed = subprocess.run(
        ["bash", "-c", f"{command} --print-config"], cwd=ROOT, env=env, capture_output=True
    )
    assert "bind                               = ['0.0.0.0:4321']" in printed.stdout.decode()
    # Started for real, bound to loopback only (the test must not listen on every interface).
    port = free_port()
    env["GUNICORN_CMD_ARGS"] = f"--bind 127.0.0.1:{port} --workers 1"
    log = tmp_path / "web.log"
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    with log.open("ab") as sink:
        process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT, env=env,
                                   stdout=sink, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert health.json()["status"] == "ok"
    finally:
        stop(process)
