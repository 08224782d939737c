"""Load generation for the gunicorn benchmarks: wrk runs, parsed."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path


def wrk(
    url: str, script: Path, seconds: float, *, threads: int = 1, args: Sequence[str] = ()
) -> float:
    """Return requests/s of one wrk run (8 connections); fail loudly on any non-2xx answer."""
    command = ["wrk", f"-t{threads}", "-c8", f"-d{max(1, round(seconds))}s", "-s", str(script)]
    out = subprocess.run(
        [*command, url, *(["--", *args] if args else [])],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))
