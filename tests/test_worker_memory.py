"""What keeps a gunicorn worker small (bench/worker_memory.py measures it).

* Resend's SDK is imported only when ``RESEND_API_KEY`` is set, and then by
  ``create_app``: in gunicorn's preloading master, shared by every worker.
* gunicorn.conf.py freezes the garbage collector's objects before each fork, so a
  worker's collections do not copy the pages it shares with the master.
* gunicorn.conf.py fixes glibc's mmap threshold, so a large freed block (a decoded image)
  goes back to the system instead of staying in the worker's heap.

Each runs in a fresh interpreter: this process has imported everything already.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CREATE_APP = """
import json, sys
from app import create_app
config = {"TESTING": True, "DATABASE_URL": sys.argv[1], "RESEND_API_KEY": sys.argv[2] or None}
create_app(config, serving=False)
print(json.dumps(sorted(name for name in ("resend", "requests") if name in sys.modules)))
"""

LOAD_CONFIG = """
import runpy, sys
settings = runpy.run_path(sys.argv[1])
"""

FREEZE = (
    LOAD_CONFIG
    + """
import gc
settings["pre_fork"](None, None)
print(gc.get_freeze_count())
"""
)

LARGE_BLOCKS = (
    LOAD_CONFIG
    + """
def anonymous_kib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

MIB = 1024 * 1024
block = bytearray(24 * MIB)  # freeing it raises glibc's dynamic mmap threshold to 24 MiB
del block
before = anonymous_kib()
block = bytearray(12 * MIB)  # a decoded image, written to: from the heap, below 24 MiB
del block
print((anonymous_kib() - before) // 1024)
"""
)


def run(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(("api_key", "imported"), [("", []), ("re_test", ["requests", "resend"])])
def test_resend_sdk_is_imported_by_create_app_only_when_configured(
    tmp_path: Path, api_key: str, imported: list[str]
) -> None:
    database = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    assert json.loads(run(CREATE_APP, database, api_key)) == imported


def config_env(tmp_path: Path) -> dict[str, str]:
    """The environment gunicorn.conf.py is read in, its metrics folder in ``tmp_path``."""
    return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}


def test_gunicorn_config_freezes_the_collector_before_each_fork(tmp_path: Path) -> None:
    config = str(ROOT / "gunicorn.conf.py")
    assert int(run(FREEZE, config, env=config_env(tmp_path))) > 0


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_gunicorn_config_hands_large_freed_blocks_back(tmp_path: Path) -> None:
    config = str(ROOT / "gunicorn.conf.py")
    kept_mib = int(run(LARGE_BLOCKS, config, env=config_env(tmp_path)))
    assert kept_mib < 4, f"{kept_mib} MiB of a freed 12 MiB block stayed in the heap"
