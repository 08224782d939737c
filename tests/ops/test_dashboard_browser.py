"""The dashboard in a real browser: Debian's Chromium driven by Playwright, screenshot checked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.ops.test_e2e_guard import deliver, server_env
from tests.servers import gunicorn

pytestmark = pytest.mark.e2e

BROWSER_DIR = Path(__file__).parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TOKEN = "dashboard-token-for-browser-tests"


def _require_browser() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if shutil.which("node") is None:
        missing.append("node")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").exists():
        missing.append(f"playwright-core (npm ci --prefix {BROWSER_DIR})")
    if missing:
        message = "browser test needs " + ", ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """Serve a dashboard with some history, walk it in Chromium; return the report and PNG."""
    _require_browser()
    tmp = tmp_path_factory.mktemp("browser")
    env = server_env(f"sqlite:///{tmp / 'log.sqlite3'}", tmp / "effects", DASHBOARD_TOKEN=TOKEN)
    png = tmp / "dashboard.png"
    with gunicorn(tmp, env, workers=2) as server:
        for i in range(8):
            assert deliver(server, "pid", f"msg_ok_{i}").status_code == 200
        for i in range(3):
            assert deliver(server, "refuse", f"msg_no_{i}").status_code == 489
        result = subprocess.run(
            ["node", str(BROWSER_DIR / "dashboard.mjs"), server.url, TOKEN, str(png)],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=BROWSER_DIR,
        )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), png


def test_login_form_gates_the_dashboard(walk: tuple[dict[str, Any], Path]) -> None:
    """A visitor is sent to the form, a wrong token is refused, the right one lets them in."""
    report, _ = walk
    assert report["redirectedToLogin"]
    assert "not valid" in report["wrongTokenMessage"]
    assert report["afterLogin"] == "/dashboard/"


def test_sign_out_ends_the_session(walk: tuple[dict[str, Any], Path]) -> None:
    """After signing out, the dashboard asks for the token again."""
    assert walk[0]["afterLogout"] == "/dashboard/login"


def test_page_runs_clean_under_its_csp(walk: tuple[dict[str, Any], Path]) -> None:
    """No console error (a CSP violation would be one); only the wrong token got a 4xx."""
    assert walk[0]["consoleErrors"] == []
    assert walk[0]["failedResponses"] == [["/dashboard/login", 401]]


def test_tables_show_stats_failures_and_schedules(walk: tuple[dict[str, Any], Path]) -> None:
    """Per-job counts and failure rate, the failures with message id, the next cron runs."""
    report, _ = walk
    jobs = {row[0]: row for row in report["jobs"]}
    assert jobs["pid"][1:4] == ["8", "0", "0.0 %"]
    assert jobs["refuse"][1:4] == ["3", "3", "100.0 %"]
    assert {row[2] for row in report["failures"]} == {"msg_no_0", "msg_no_1", "msg_no_2"}
    assert all(row[3] == "1" and row[4] == "non-retryable (489)" for row in report["failures"])
    [(name, cron, runs)] = report["schedules"]
    assert (name, cron) == ("nightly-report", "0 3 * * *")
    assert len(runs.splitlines()) == 3 and all("03:00:00 UTC" in r for r in runs.splitlines())


def _pixels(png: Path, box: dict[str, float]) -> list[tuple[int, int, int]]:
    image = Image.open(png).convert("RGB")
    area = (box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"])
    raw = image.crop(tuple(round(v) for v in area)).tobytes()
    return [(raw[i], raw[i + 1], raw[i + 2]) for i in range(0, len(raw), 3)]


def _near(pixel: tuple[int, int, int], color: str) -> bool:
    target = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    return all(abs(p - t) <= 40 for p, t in zip(pixel, target, strict=True))


def test_screenshot_shows_a_line_per_job_and_failures(walk: tuple[dict[str, Any], Path]) -> None:
    """In the screenshot's chart area every series' colour is drawn, failures included."""
    report, png = walk
    assert {s["label"] for s in report["series"]} == {"pid", "refuse", "failures"}
    pixels = _pixels(png, report["boxes"]["chart"])
    for series in report["series"]:
        drawn = sum(_near(p, series["color"]) for p in pixels)
        assert drawn > 100, (series, drawn)


def test_screenshot_shows_the_tables_text(walk: tuple[dict[str, Any], Path]) -> None:
    """The tables are rendered: dark text pixels on a light background in their areas."""
    report, png = walk
    for name in ("jobs", "failures"):
        pixels = _pixels(png, report["boxes"][name])
        dark = sum(1 for p in pixels if sum(p) < 200)
        light = sum(1 for p in pixels if sum(p) > 700)
        assert dark > 300 and light > len(pixels) // 2, (name, dark, light)
