"""The dashboard's workflow pages in a real browser: Debian's Chromium driven by Playwright.

Runs are made in this process on a SQLite store (the stub queue on its virtual clock),
then gunicorn serves that store and ``tests/ops/browser/runs.mjs`` walks the pages as a
person would: sign in, read the runs and counts, filter, follow the navigation, open a
run's timeline and a waiting run, then start a run through the form (which the bundled
dev server delivers to gunicorn) and cancel it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app import create_app
from app.devserver import DevServer
from app.jobs import JobRegistry
from app.testing import StubQueue
from app.workflows import notify
from tests.conftest import TEST_CONFIG
from tests.ops.test_dashboard_browser import BROWSER_DIR, _near, _pixels, _require_browser
from tests.ops.test_e2e_guard import server_env
from tests.servers import free_port, gunicorn
from tests.workflows.runs import declare, deliver_due

pytestmark = pytest.mark.e2e

TOKEN = "dashboard-token-for-browser-tests"


def make_runs(database_url: str) -> dict[str, str]:
    """Leave one run completed (every kind of step), one failed and one waiting."""
    registry = declare(JobRegistry())
    app = create_app({**TEST_CONFIG, "DATABASE_URL": database_url}, registry=registry)
    queue = StubQueue.install(app)
    order = registry["order"]
    made = {}
    with app.app_context():
        for name, payload in (("completed", "o-1"), ("failed", "fail-2"), ("waiting", "o-3")):
            made[name] = order.start({"order": payload})
            deliver_due(app, queue)
        deliver_due(app, queue, advance=3601)
        notify("paid:o-1", {"card": "<b>visa</b>"})
        deliver_due(app, queue)
    store = app.extensions["qstash_jobs.store"]
    store.close()
    return made


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, dict[str, str]]:
    """Serve the runs, walk them in Chromium; return the report, the PNG and the run ids."""
    _require_browser()
    tmp = tmp_path_factory.mktemp("runs-browser")
    database_url = f"sqlite:///{tmp / 'store.sqlite3'}"
    made = make_runs(database_url)
    png = tmp / "runs.png"
    port = free_port()
    # Runs started on the page are published to the dev server, which delivers them to
    # gunicorn (APP_URL) signed with its keys.
    with DevServer(db=tmp / "qstash.db").running(port=0) as dev:
        env = server_env(database_url, tmp / "effects", DASHBOARD_TOKEN=TOKEN)
        env.update(dev.env(), QSTASH_DEV="1", APP_URL=f"http://127.0.0.1:{port}")
        env["JOBS_PACKAGES"] = "tests.workflows.browser_flows"
        with gunicorn(tmp, env, workers=1, port=port) as server:
            result = subprocess.run(
                ["node", str(BROWSER_DIR / "runs.mjs"), server.url, TOKEN, str(png)],
                capture_output=True,
                text=True,
                timeout=90,
                cwd=BROWSER_DIR,
            )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), png, made


Walk = tuple[dict[str, Any], Path, dict[str, str]]


def test_the_pages_run_clean_under_the_csp(walk: Walk) -> None:
    """No console error (a blocked inline style or script would be one), no 4xx/5xx but
    the bad start form's 400."""
    report, _, _ = walk
    assert report["consoleErrors"] == []
    assert report["failedResponses"] == [["/dashboard/runs/start", 400]]


def test_signing_in_leads_back_to_the_runs(walk: Walk) -> None:
    """The login form returns to the runs page, which lists each run and the counts."""
    report, _, made = walk
    assert report["afterLogin"] == "/dashboard/runs"
    assert {row[0]: row[2] for row in report["runs"]} == {v: k for k, v in made.items()}
    assert report["counts"] == {"pending": "0", "running": "0", "waiting": "1",
                                "completed": "1", "failed": "1", "cancelled": "0"}  # fmt: skip


def test_a_count_filters_the_list(walk: Walk) -> None:
    """Clicking the 'failed' count shows only the failed run."""
    report, _, made = walk
    assert report["failedFilter"]["search"] == "?state=failed"
    [row] = report["failedFilter"]["runs"]
    assert row[0] == made["failed"] and "<b>no</b> stock" in row[5]


def test_the_navigation_links_both_pages(walk: Walk) -> None:
    """'Deliveries' and 'Workflow runs' in the header lead to each page."""
    assert walk[0]["deliveriesPath"] == "/dashboard/"


def test_the_timeline_shows_steps_and_branches(walk: Walk) -> None:
    """The completed run's steps in order, branches indented under their parallel step."""
    report, _, made = walk
    assert report["runPath"] == f"/dashboard/runs/{made['completed']}"
    steps = report["steps"]
    assert [row[0] for row in steps] == ["0", "1", "2", "3", "3.0", "3.1"]
    assert [row[2] for row in steps] == ["run", "sleep", "event", "parallel", "run", "run"]
    assert steps[2][8] == '{"event":{"card":"<b>visa</b>"}}'
    indent = report["branchIndent"]
    assert indent["3.0"] > indent["3"] + 10 and indent["3.1"] == indent["3.0"]


def test_the_waiting_run_shows_its_wait(walk: Walk) -> None:
    """A run waiting for its event (its sleep is over) says so."""
    assert walk[0]["waitingFor"].startswith("event paid:o-3 (until ")


def test_screenshot_shows_the_bars_and_the_text(walk: Walk) -> None:
    """Every step's bar is drawn in its colour; the timeline's text is rendered."""
    report, png, _ = walk
    assert len(report["bars"]) == 6 and all(bar["width"] >= 2 for bar in report["bars"])
    pixels = _pixels(png, report["boxes"]["steps"])
    for fill in {bar["fill"] for bar in report["bars"]}:
        red, green, blue = (int(part) for part in fill[4:-1].split(","))
        drawn = sum(_near(p, f"#{red:02x}{green:02x}{blue:02x}") for p in pixels)
        assert drawn > 20, (fill, drawn)
    dark = sum(1 for p in pixels if sum(p) < 200)
    assert dark > 300


def test_a_bad_start_form_comes_back_with_its_error(walk: Walk) -> None:
    """Bad JSON: the form again, saying so, with what was typed."""
    bad = walk[0]["badStart"]
    assert bad["errors"].strip().startswith("Input: not valid JSON")
    assert bad["input"] == '{"order": ' and bad["runId"] == "browser-run"


def test_a_run_started_on_the_page_runs_and_can_be_cancelled(walk: Walk) -> None:
    """The form leads to the run's page, which shows the run once the dev server has
    delivered its start; 'Cancel run' cancels it and the page stops offering the actions."""
    report = walk[0]
    assert report["started"]["path"] == "/dashboard/runs/browser-run"
    assert report["started"]["search"] == "?done=started"
    assert report["started"]["notice"] == "Run started."
    assert report["started"]["state"] == "waiting"
    cancelled = report["cancelled"]
    assert (cancelled["path"], cancelled["search"]) == ("/dashboard/runs/browser-run",
                                                       "?done=cancelled")  # fmt: skip
    assert cancelled["notice"].startswith("Run cancelled")
    assert cancelled["state"] == "cancelled" and cancelled["actions"] == 0
