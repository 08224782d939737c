"""Every benchmark script runs in its ``--smoke`` mode, so an import error or a changed API
fails here rather than the next time someone measures.

A script is a ``bench/*.py`` file that is not a ``_``-prefixed helper and runs as
``__main__``; modules that are only imported or served (``receiver_app.py``) are not.
A script that drives wrk or imports pyvips is skipped only when that tool is missing.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Each smoke run takes seconds; this only stops a hung one.
TIMEOUT = 120


def is_script(path: Path) -> bool:
    """Say whether ``path`` is a benchmark meant to be run, not a helper module."""
    runs_as_main = re.search(r"^if __name__ == .__main__.:", path.read_text(), re.MULTILINE)
    return not path.name.startswith("_") and runs_as_main is not None


SCRIPTS = sorted(path for path in (ROOT / "bench").glob("*.py") if is_script(path))


def missing(path: Path) -> str | None:
    """Return why ``path`` cannot run on this machine, or None if it can."""
    source = path.read_text()
    if re.search(r"\bwrk\b", source) and shutil.which("wrk") is None:
        return f"{path.name} drives wrk, which is not installed (apt-get install wrk)"
    uses_pyvips = re.search(r"^\s*(import|from) pyvips\b", source, re.MULTILINE)
    if uses_pyvips and importlib.util.find_spec("pyvips") is None:
        return f"{path.name} compares with pyvips: pip install -e '.[bench]'"
    return None


def test_the_benchmarks_are_found() -> None:
    assert {"receiver.py", "webhook.py", "devserver.py"} <= {path.name for path in SCRIPTS}


@pytest.mark.e2e
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_benchmark_runs_in_smoke_mode(script: Path) -> None:
    reason = missing(script)
    if reason:
        pytest.skip(reason)
    result = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"{script.name} --smoke failed:\n{result.stdout}\n{result.stderr}"
    )
    assert result.stdout.strip(), f"{script.name} --smoke printed nothing"
