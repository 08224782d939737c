"""The import rules between the layers hold, and would catch a breach.

The layers are drawn in the README's Architecture section.

The rules are import-linter contracts in pyproject.toml; ``lint-imports`` checks them on
the whole import graph, indirect imports included.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)},
    )


def test_the_layers_keep_their_import_rules() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    for name in ("app", "jobs"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("app/qstash/timing.py", "import flask", "imports nothing of the framework"),
        ("app/qstash/signature.py", "from app import config", "imports nothing of the framework"),
        ("app/qstash/cron.py", "from werkzeug import Request", "imports nothing of the framework"),
        ("app/receiver.py", "from app.store import guard", "Layers import only"),
        ("app/store/log.py", "from app import metrics", "Layers import only"),
        ("app/jobs.py", "import jobs.email", "Layers import only"),
    ],
)
def test_a_breach_of_the_rules_is_caught(
    tree_copy: Path, module: str, line: str, contract: str
) -> None:
    with open(tree_copy / module, "a") as source:
        source.write(f"\n{line}  # noqa\n")
    result = lint(tree_copy)
    assert result.returncode != 0, result.stdout
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout
