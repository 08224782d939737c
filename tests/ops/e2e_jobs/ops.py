"""Jobs with observable side effects: a line appended to ``OPS_SIDE_EFFECTS`` per run."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from app.delivery import Delivery
from app.errors import NonRetryableError
from app.jobs import cron, job

logger = logging.getLogger(__name__)


def _record(delivery: Delivery) -> None:
    with Path(os.environ["OPS_SIDE_EFFECTS"]).open("a") as file:
        file.write(f"{delivery.job} {delivery.message_id} {os.getpid()}\n")


@job("side-effect")
def side_effect(payload: Any, delivery: Delivery) -> dict[str, Any]:
    """Record one run, slowly enough for duplicates to arrive while it runs."""
    time.sleep(0.5)
    _record(delivery)
    return {"done": delivery.message_id}


@job("die-once")
def die_once(payload: Any, delivery: Delivery) -> dict[str, Any]:
    """Kill the worker on the first run (a crash mid-delivery); record later runs."""
    marker = Path(os.environ["OPS_SIDE_EFFECTS"]).with_suffix(".died")
    if not marker.exists():
        marker.touch()
        os._exit(1)
    _record(delivery)
    return {"survived": True}


@job("pid")
def pid(payload: Any, delivery: Delivery) -> dict[str, int]:
    """Answer the worker's pid, after a short pause so parallel calls spread over workers."""
    logger.info("handling in worker %d", os.getpid())
    time.sleep(0.05)
    return {"pid": os.getpid()}


@job("refuse")
def refuse(payload: Any, delivery: Delivery) -> None:
    """Fail for good."""
    logger.warning("refusing this payload")
    raise NonRetryableError("never")


@cron("nightly-report", cron="0 3 * * *")
def nightly_report(payload: Any, delivery: Delivery) -> None:
    """A scheduled job, for the dashboard's schedules table."""
