"""The dashboard page: deliveries per job over time, failure rate, p95, failures, schedules."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import abort, current_app, render_template, request

from app.dashboard import chart
from app.store import get_store, queries

if TYPE_CHECKING:
    from app.jobs import JobRegistry

MINUTE, HOUR = 60_000, 3_600_000
#: window name → (length, bucket) in milliseconds.
WINDOWS = {"1h": (HOUR, 5 * MINUTE), "24h": (24 * HOUR, HOUR), "7d": (7 * 24 * HOUR, 6 * HOUR)}
DEFAULT_WINDOW = "24h"


@dataclass(frozen=True)
class Schedule:
    """A declared cron job and its next firing times."""

    job: str
    cron: str
    next_runs: list[datetime]


def schedules(registry: JobRegistry) -> list[Schedule]:
    """Return every job declared with ``@cron``, with its next three runs."""
    return [
        Schedule(job.name, job.cron.text, job.cron.next_runs(3))
        for job in registry
        if job.cron is not None
    ]


def _window() -> tuple[str, int, int]:
    name = request.args.get("window", DEFAULT_WINDOW)
    if name not in WINDOWS:
        abort(400, description=f"window must be one of {', '.join(WINDOWS)}")
    length, bucket = WINDOWS[name]
    return name, length, bucket


def _log_context(since_ms: int, until_ms: int, bucket_ms: int) -> dict[str, Any]:
    store = get_store(current_app)
    if store is None or store.log is None:
        return {"log_on": False}
    buckets = (until_ms - since_ms) // bucket_ms
    with store.read() as conn:
        counts = queries.series(conn, since_ms, until_ms, bucket_ms)
        failed = queries.series(conn, since_ms, until_ms, bucket_ms, failed_only=True)
        stats = queries.job_stats(conn, since_ms, until_ms)
        failures = queries.latest_failures(conn, limit=25, since_ms=since_ms)
    all_failed = [sum(column) for column in zip(*failed.values(), strict=True)] or [0] * buckets
    return {
        "log_on": True,
        "chart": chart.build(
            counts, all_failed, since_ms=since_ms, bucket_ms=bucket_ms, buckets=buckets
        ),
        "stats": stats,
        "failures": failures,
    }


def index() -> str:
    """Render the dashboard for the chosen window (``?window=1h|24h|7d``)."""
    name, length, bucket = _window()
    # Whole buckets, the last one ending now: the chart's right edge is "now".
    until_ms = (int(time.time() * 1000) // bucket + 1) * bucket
    since_ms = until_ms - length
    return render_template(
        "dashboard/index.html",
        window=name,
        windows=list(WINDOWS),
        schedules=schedules(current_app.extensions["qstash_jobs"]),
        **_log_context(since_ms, until_ms, bucket),
    )


def when(at_ms: int | float | datetime | None) -> str:
    """Format epoch milliseconds or a datetime as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if at_ms is None:
        return "—"
    moment = at_ms if isinstance(at_ms, datetime) else datetime.fromtimestamp(at_ms / 1000, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
