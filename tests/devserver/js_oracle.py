"""Run one of the JS feature oracles (``js/*.mjs``) against a fresh dev server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.devserver import DevServer

JS = Path(__file__).parent / "js"


def run_oracle(script: str, db: Path, package: str = "qstash") -> dict[str, Any]:
    """Run ``js/<script>`` with the official ``@upstash/<package>`` against a dev server;
    return its JSON."""
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "@upstash" / package).is_dir():
        message = "the JS oracle needs Node.js and `npm ci --prefix tests/devserver/js`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (.ci/run installs both)")
        pytest.skip(message)
    with DevServer(db=db, time_scale=0.01).running(port=0) as server:
        env = {k: v for k, v in os.environ.items() if k != "QSTASH_DEV"}
        env.update(server.env())
        done = subprocess.run(
            [node, script], cwd=JS, env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 0, done.stderr + done.stdout
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
