"""The dashboard's workflow pages: runs (filtered, counted, paged) and a run's timeline."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from app.dashboard import runs as runs_page
from app.jobs import JobRegistry
from app.store import get_store
from app.testing import StubQueue
from app.workflows import notify, state, workflow
from app.workflows.context import MAX_BRANCHES
from app.workflows.display import StepView
from tests.workflows.runs import declare, deliver_due

TOKEN = "a-dashboard-token-of-some-length"
App = tuple[Flask, StubQueue]
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def app(make_app: Callable[..., App], registry: JobRegistry) -> App:
    declare(registry)

    @workflow("big", registry=registry)
    def big(ctx: Any, payload: Any) -> Any:
        return ctx.run("blob", lambda: HOSTILE + "x" * 5000)

    return make_app(DASHBOARD_TOKEN=TOKEN)


def get(flask_app: Flask, path: str, token: str = TOKEN) -> TestResponse:
    return flask_app.test_client().get(path, headers={"Authorization": f"Bearer {token}"})


def page(flask_app: Flask, path: str) -> str:
    response = get(flask_app, path)
    assert response.status_code == 200, response.data[:300]
    return response.get_data(as_text=True)


def start(app: App, name: str, payload: Any, *, advance: float = 0.0) -> str:
    flask_app, queue = app
    workflow_ = flask_app.extensions["qstash_jobs"][name]
    with flask_app.app_context():
        run_id: str = workflow_.start(payload)
    deliver_due(flask_app, queue)
    if advance:
        deliver_due(flask_app, queue, advance=advance)
    return run_id


def rows(html: str, table: str) -> list[list[str]]:
    """The text of each cell of ``table``'s body rows (tags stripped)."""
    body = html.split(f'<table id="{table}">', 1)[1].split("</table>", 1)[0]
    body = body.split("<tbody>", 1)[1]
    cells = [
        re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in row] for row in cells]


def test_runs_need_the_dashboard_token(app: App) -> None:
    """Same access as the dashboard: no credentials → the login form, a wrong token → 401."""
    flask_app, _ = app
    response = flask_app.test_client().get("/dashboard/runs?state=failed")
    assert response.status_code == 302
    assert response.headers["Location"] == "/dashboard/login?next=/dashboard/runs?state%3Dfailed"
    assert get(flask_app, "/dashboard/runs", TOKEN + "x").status_code == 401
    assert get(flask_app, "/dashboard/runs/wfr_x", TOKEN + "x").status_code == 401


def test_runs_are_listed_newest_first_with_counts_per_state(app: App) -> None:
    """Each run links to its page; the counts say how many runs are in each state."""
    flask_app, _ = app
    first = start(app, "order", {"order": "o-1"})
    second = start(app, "order", {"order": "fail-2"})
    third = start(app, "big", {})
    html = page(flask_app, "/dashboard/runs")
    listed = rows(html, "runs")
    assert [row[0] for row in listed] == [third, second, first]
    assert [row[2] for row in listed] == ["completed", "failed", "waiting"]
    assert listed[2][5].startswith("sleep cool-off (until ")
    assert f'href="/dashboard/runs/{first}"' in html
    counts = dict(re.findall(r'data-state="(\w+)".*?<b>(\d+)</b>', html))
    assert counts == {"pending": "0", "running": "0", "waiting": "1", "completed": "1",
                      "failed": "1", "cancelled": "0"}  # fmt: skip


def test_runs_are_filtered_by_workflow_and_state(app: App) -> None:
    """?workflow= and ?state= narrow the list, and the counts follow the workflow."""
    flask_app, _ = app
    waiting = start(app, "order", {"order": "o-1"})
    start(app, "order", {"order": "fail-2"})
    start(app, "big", {})
    html = page(flask_app, "/dashboard/runs?workflow=order&state=waiting")
    assert [row[0] for row in rows(html, "runs")] == [waiting]
    counts = dict(re.findall(r'data-state="(\w+)".*?<b>(\d+)</b>', html))
    assert (counts["completed"], counts["failed"], counts["waiting"]) == ("0", "1", "1")
    empty = page(flask_app, "/dashboard/runs?workflow=big&state=failed")
    assert rows(empty, "runs") == [["No runs match these filters."]]


@pytest.mark.parametrize(
    "query", ["state=sleeping", "before=abc", "before=12", "workflow=" + "w" * 201]
)
def test_bad_filters_are_a_clear_400(app: App, query: str) -> None:
    """An unknown state, a malformed page cursor or an oversized name: 400 saying which."""
    response = get(app[0], f"/dashboard/runs?{query}")
    assert response.status_code == 400
    assert b"bad " in response.data


def test_pages_hold_100_runs_and_lose_none_made_in_one_millisecond(app: App) -> None:
    """250 runs, many created in the same millisecond: pages of 100, each run exactly once."""
    flask_app, _ = app
    store = get_store(flask_app)
    assert store is not None
    made = set()
    for i in range(250):
        run_id = f"run-{i:03d}"
        lease = state.Lease(run_id, "t", None, 1000)
        created = 1_000_000 + i // 7  # seven runs per millisecond
        assert state.create(store.engine, run_id, "order", "{}", lease, started_ms=created)
        made.add(run_id)
    seen: list[str] = []
    path = "/dashboard/runs"
    while True:
        html = page(flask_app, path)
        listed = [row[0] for row in rows(html, "runs")]
        assert len(listed) <= runs_page.PAGE
        seen += listed
        older = re.search(r'rel="next" href="([^"]+)"', html)
        if older is None:
            break
        path = older.group(1).replace("&amp;", "&")
    assert len(seen) == len(made) and set(seen) == made
    assert seen == sorted(seen, reverse=True)  # newest first, ties by id


def test_run_page_shows_each_step_branches_and_the_output(app: App) -> None:
    """The timeline: every step with kind, state, attempts and result; branches under
    their parallel step; a wait's wake time and event."""
    flask_app, queue = app
    run_id = start(app, "order", {"order": "o-1", "qty": 2}, advance=3601)
    with flask_app.app_context():
        assert notify("paid:o-1", {"card": HOSTILE}) == [run_id]
    deliver_due(flask_app, queue)
    html = page(flask_app, f"/dashboard/runs/{run_id}")
    steps = rows(html, "steps")
    assert [row[0] for row in steps] == ["0", "1", "2", "3", "3.0", "3.1"]
    assert [row[1:4] for row in steps] == [
        ["price", "run", "done"],
        ["cool-off", "sleep", "done"],
        ["paid", "event", "done"],
        ["ship + mail", "parallel", "done"],
        ["ship", "run", "done"],
        ["mail", "run", "done"],
    ]
    assert steps[0][6] == "1" and steps[0][8] == '{"total":6,"note":"o-1"}'.replace('"', "&#34;")
    assert steps[1][7].startswith("wake ") and steps[2][7].startswith("event paid:o-1 (timeout ")
    assert 'class="branch" data-label="3.0"' in html
    assert "completed" in html and "&#34;done&#34;:[&#34;shipped&#34;,&#34;mailed&#34;]" in html
    assert HOSTILE not in html and "&lt;script&gt;" in html
    assert "style=" not in html  # the CSP allows no inline style


def test_a_waiting_run_shows_its_current_wait(app: App) -> None:
    """A run asleep: 'Waiting for' names the sleep; its step is open on the timeline."""
    flask_app, _ = app
    run_id = start(app, "order", {"order": "o-1"})
    html = page(flask_app, f"/dashboard/runs/{run_id}")
    assert re.search(r'<dd id="waiting">sleep cool-off \(until [^<]+\)</dd>', html)
    [sleep] = [row for row in rows(html, "steps") if row[1] == "cool-off"]
    assert sleep[3] == "waiting" and sleep[5] == "—"
    assert 'class="open sleep"' in html


def test_results_are_cut_and_escaped(app: App) -> None:
    """A 5 KB result shows as a few hundred characters, markup escaped."""
    flask_app, _ = app
    run_id = start(app, "big", {})
    html = page(flask_app, f"/dashboard/runs/{run_id}")
    [blob] = rows(html, "steps")
    shown = blob[8].replace("&#34;", '"').replace("&lt;", "<").replace("&gt;", ">")
    assert shown.startswith('"' + HOSTILE) and shown.endswith("…")
    assert len(shown) == runs_page.RESULT_CHARS
    assert HOSTILE not in html


def test_a_failed_run_names_its_step_and_error_escaped(app: App) -> None:
    """A failed run shows the failing step and its error as text."""
    flask_app, _ = app
    run_id = start(app, "order", {"order": "fail-1"})
    html = page(flask_app, f"/dashboard/runs/{run_id}")
    assert "refuse: NonRetryableError: &lt;b&gt;no&lt;/b&gt; stock" in html
    assert "<b>no</b>" not in html


def test_steps_are_paged_without_splitting_a_parallel_step(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With pages of 4 rows, step 3 and its branches move to the next page together."""
    flask_app, queue = app
    monkeypatch.setattr(runs_page, "STEP_PAGE", 4)
    run_id = start(app, "order", {"order": "o-1"}, advance=3601)
    with flask_app.app_context():
        notify("paid:o-1")
    deliver_due(flask_app, queue)
    first = page(flask_app, f"/dashboard/runs/{run_id}")
    assert [row[0] for row in rows(first, "steps")] == ["0", "1", "2"]
    later = re.search(r'rel="next" href="([^"]+)"', first)
    assert later is not None and later.group(1).endswith("?from=3")
    second = page(flask_app, later.group(1))
    assert [row[0] for row in rows(second, "steps")] == ["3", "3.0", "3.1"]
    assert 'rel="next"' not in second


def test_an_unknown_run_is_a_404_page(app: App) -> None:
    """A run id no run has: 404 with a page saying so (escaped)."""
    response = get(app[0], "/dashboard/runs/%3Cb%3Enope")
    assert response.status_code == 404
    assert "No workflow run <code>&lt;b&gt;nope</code>" in response.get_data(as_text=True)


def test_the_navigation_links_deliveries_and_runs(app: App) -> None:
    """Both pages link each other; the runs page marks itself current."""
    flask_app, _ = app
    index = page(flask_app, "/dashboard/")
    assert 'href="/dashboard/runs">Workflow runs</a>' in index
    runs_html = page(flask_app, "/dashboard/runs")
    assert 'href="/dashboard/">Deliveries</a>' in runs_html
    assert 'href="/dashboard/runs" aria-current="page">Workflow runs' in runs_html


def test_no_workflows_no_runs_link(make_app: Callable[..., App], registry: JobRegistry) -> None:
    """An app without workflows shows no 'Workflow runs' link."""
    flask_app, _ = make_app(DASHBOARD_TOKEN=TOKEN)
    assert "Workflow runs" not in page(flask_app, "/dashboard/")


def test_with_the_store_off_the_runs_page_says_so(
    make_app: Callable[..., App], registry: JobRegistry
) -> None:
    """No store, no runs: the page says why instead of failing."""
    declare(registry)
    flask_app, _ = make_app(DASHBOARD_TOKEN=TOKEN, DELIVERY_LOG=False, DUPLICATE_GUARD=False)
    assert "The store is off" in page(flask_app, "/dashboard/runs")
    assert get(flask_app, "/dashboard/runs/wfr_x").status_code == 404


def _view(started_ms: int, finished_ms: int | None) -> StepView:
    step = state.Step(0, state.MAIN, "s", "run", "done", None, started_ms, finished_ms,
                      None, None, 1)  # fmt: skip
    took = None if finished_ms is None else finished_ms - started_ms
    return StepView(step, "0", False, took, "")


@pytest.mark.parametrize(
    ("started", "finished", "x", "width"),
    [
        (1000, 1500, 0.0, 120.0),  # the first half
        (1500, None, 120.0, 120.0),  # still running: reaches the end
        (2000, 2000, 238.0, 2.0),  # at the very end, instant: still 2 units wide
        (900, 1100, 0.0, 24.0),  # started "before" its run (another host's clock)
        (1900, 2600, 216.0, 24.0),  # finished "after" now
    ],
)
def test_timeline_bars_stay_inside_the_axis(
    started: int, finished: int | None, x: float, width: float
) -> None:
    """Each bar is at least 2 units wide and never leaves the axis, whatever the clocks."""
    [bar] = runs_page.bars([_view(started, finished)], 1000, 2000)
    assert (bar.x, bar.width) == (x, width)
    assert bar.x >= 0 and bar.x + bar.width <= runs_page.BAR_WIDTH


def test_a_step_page_holds_a_whole_parallel_step() -> None:
    """A page never splits a position, so it must hold a parallel step with every branch."""
    assert runs_page.STEP_PAGE > MAX_BRANCHES + 1
