"""Load generation for the gunicorn benchmarks: wrk's request scripts, and wrk runs, parsed."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def lua_string(value: str | bytes) -> str:
    """Return ``value`` as a Lua string literal: printable ASCII as is, any other byte and
    ``"`` and ``\\`` as a three-digit decimal escape (Lua reads ``\\ddd`` as that byte)."""
    raw = value.encode() if isinstance(value, str) else value
    chars = (chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03d}" for b in raw)
    return '"' + "".join(chars) + '"'


def post_script(path: Path, body: str | bytes, headers: Mapping[str, str]) -> Path:
    """Write to ``path`` a wrk script sending every request as one POST of ``body`` with
    ``headers``; return ``path``."""
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(body)}"]
    lines += [f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


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
