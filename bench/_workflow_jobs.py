"""The step-overhead benchmark's jobs (``JOBS_PACKAGES=bench._workflow_jobs``).

``bench-steps`` is a workflow of ``n`` steps; ``bench-chain`` is the same work as ``n``
plain jobs, each publishing the next with its result. The official SDK's side
(``bench._workflow_apps.peer``) runs the same ``work`` in the same order. Each side writes
``$BENCH_DONE_DIR/<tag>.done`` once its last step's result is in the code that follows
it; the benchmark waits for that file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from app.delivery import Delivery
from app.jobs import job
from app.workflows import Context, workflow


def work(number: int, previous: dict[str, Any] | None) -> dict[str, Any]:
    """One step: check that the previous step's result arrived, return about 1 KB."""
    if number and (previous is None or previous["step"] != number - 1):
        raise RuntimeError(f"step {number} got {str(previous)[:40]} as the previous result")
    return {"step": number, "blob": f"{number:04d}" * 250}


def finished(tag: str, run_id: str) -> None:
    """Tell the benchmark the run's last step is done (and the run's id on its side)."""
    folder = Path(os.environ["BENCH_DONE_DIR"])
    partial = folder / f"{tag}.{os.getpid()}.tmp"
    partial.write_text(run_id)
    partial.replace(folder / f"{tag}.done")  # whole, or not there yet


@workflow("bench-steps", retries=0)
def steps(ctx: Context, payload: dict[str, Any]) -> dict[str, int]:
    """``n`` steps, each given the previous one's result."""
    previous = None
    for number in range(payload["n"]):
        previous = ctx.run(f"step-{number}", work, number, previous)
    finished(payload["tag"], ctx.run_id)
    return {"steps": payload["n"]}


@job("bench-chain", retries=0)
def chain(payload: dict[str, Any], delivery: Delivery) -> dict[str, int]:
    """Step ``i`` of ``n`` as a plain job: the work, then publish step ``i + 1`` with it."""
    number = payload["i"]
    result = work(number, payload["previous"])
    if number + 1 < payload["n"]:
        chain.enqueue({**payload, "i": number + 1, "previous": result})
    else:
        finished(payload["tag"], payload["tag"])
    return {"step": number}
