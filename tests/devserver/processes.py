"""The dev server CLI as a child process, for the crash and CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.servers import ROOT, wait_until_up

FLASK = str(Path(sys.executable).with_name("flask"))


def start_flask(
    args: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``flask --app wsgi <args>`` in the project root, output to ``log``."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("QSTASH_DEV", None)
    with log.open("ab") as sink:
        return subprocess.Popen(
            [FLASK, "--app", "wsgi", *args],
            cwd=ROOT,
            env=full_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def start_dev_server(port: int, db: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """Start ``flask qstash dev`` on ``port`` and wait until its API answers."""
    process = start_flask(["qstash", "dev", "--port", str(port), "--db", str(db), *extra], log)
    wait_until_up(f"http://127.0.0.1:{port}/v2/keys", process, log, timeout=30)
    return process
