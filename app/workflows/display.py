"""How a run and its steps read to a person: what ``flask workflows show`` and the
dashboard's run page print. Formatting only; reading runs is ``app.workflows.state``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from app.workflows.state import MAIN, Run, Step

__all__ = ["StepView", "abbreviate", "at", "duration", "step_views", "wait_text"]


def abbreviate(text: str | None, limit: int) -> str:
    """Return ``text`` on one line, cut to ``limit`` characters with ``…`` (None: ``""``)."""
    if text is None:
        return ""
    line = " ".join(text.split()) if any(c in text for c in "\r\n\t") else text
    return line if len(line) <= limit else line[: max(0, limit - 1)] + "…"


def at(ms: int | None) -> str:
    """Format epoch milliseconds as ``YYYY-MM-DD HH:MM:SS UTC`` (None: ``—``)."""
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(ms: int | None) -> str:
    """Format a length of time in milliseconds: ``850 ms``, ``4.2 s``, ``3m 5s``, ``2d 4h``."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{max(ms, 0)} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if whole >= size:
            return f"{whole // size}{unit} {whole % size // sub_size}{sub}"
    return f"{whole // 60}m {whole % 60}s"


def wait_text(step: Step) -> str:
    """Say what a wait step waits (or waited) for: its event and timeout, or its wake time."""
    if step.kind == "event":
        return f"event {step.event_id} (timeout {at(step.wake_ms)})"
    if step.kind == "sleep":
        return f"wake {at(step.wake_ms)}"
    return ""


@dataclass(frozen=True)
class StepView:
    """One line of a run's timeline: a step, or a branch of the parallel step above it."""

    step: Step
    #: ``"3"`` for a main-line step, ``"3.1"`` for branch 1 of step 3.
    label: str
    branch: bool
    #: None while the step runs or waits.
    duration_ms: int | None
    wait: str


def step_views(run: Run) -> list[StepView]:
    """Return the run's steps in order, each parallel step followed by its branches."""
    views = []
    for step in run.steps:
        branch = step.branch != MAIN
        label = f"{step.position}.{step.branch}" if branch else str(step.position)
        took = None if step.finished_ms is None else step.finished_ms - step.started_ms
        views.append(StepView(step, label, branch, took, wait_text(step)))
    return views
