"""Real servers for end-to-end tests: gunicorn running an app on a free loopback port."""

from __future__ import annotations

import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A running server process and its base URL."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """Return what the server printed so far (stdout and stderr)."""
        return self.log.read_text(errors="replace")


@contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[None]:
    """Run an in-process ``server`` in a thread for the block; shut it down and close it after."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll ``url`` until it answers; fail with the server's output if it dies or hangs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not come up in {timeout}s:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Terminate ``process`` and reap it; kill it if it outlives ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def gunicorn(
    tmp_path: Path,
    env: Mapping[str, str],
    *,
    app: str = "wsgi:app",
    workers: int = 1,
    args: tuple[str, ...] = (),
    port: int | None = None,
    ready_path: str = "/healthz",
    config: bool = True,
) -> Iterator[Server]:
    """Run ``gunicorn app`` from the project root with ``env`` on 127.0.0.1; stop it after.

    ``config`` reads the project's gunicorn.conf.py (as deployed); without it gunicorn
    runs on its own defaults (no access log): an empty config file is passed explicitly,
    since gunicorn started in the project root would otherwise read ./gunicorn.conf.py.
    """
    port = port or free_port()
    log = tmp_path / f"gunicorn-{port}.log"
    config_file = ROOT / "gunicorn.conf.py"
    if not config:
        config_file = tmp_path / "gunicorn-defaults.conf.py"
        config_file.write_text("# gunicorn's own defaults\n")
    command = [
        GUNICORN,
        app,
        "--config",
        str(config_file),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--control-socket",
        str(tmp_path / f"gunicorn-{port}.ctl"),
        *args,
    ]
    # The delivery log and duplicate guard keep their state in tmp_path, not in the
    # repository's instance folder, so nothing leaks between servers or test runs.
    store = {"DATABASE_URL": f"sqlite:///{tmp_path / f'store-{port}.sqlite3'}"}
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **store, **env}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, env=full_env, stdout=sink, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + ready_path, process, log, timeout=30)
        yield Server(url=url, process=process, log=log)
    finally:
        stop(process, timeout=15)
