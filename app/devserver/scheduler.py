"""Cron schedules: each firing publishes one message carrying ``Upstash-Schedule-Id``.

Expressions are QStash's (5 fields, optional ``CRON_TZ=Zone`` prefix), parsed and iterated
by ``app.qstash.cron`` (cronsim underneath). A firing and the schedule's move to its next time are
one transaction, so a restart neither loses nor repeats a firing; a firing missed while the
server was down happens once at start-up. ``--time-scale`` shrinks the wait to each next
firing by the same factor as every other wait.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from app.devserver.delivery import Dispatcher
from app.devserver.records import Message, Schedule, new_id
from app.devserver.store import Store
from app.qstash.cron import parse_cron

log = logging.getLogger(__name__)


def next_fire(cron: str, now: float, time_scale: float) -> float:
    """Return the (scaled) unix time of the next firing of ``cron`` after ``now``."""
    expression = parse_cron(cron)
    after = datetime.fromtimestamp(now, UTC)
    upcoming = expression.next_runs(1, after=after)[0].timestamp()
    return now + (upcoming - now) * time_scale


def firing(schedule: Schedule, now: float, time_scale: float) -> Message:
    """Return the message one firing of ``schedule`` publishes."""
    spec: dict[str, Any] = {**schedule.spec, "scheduleId": schedule.id}
    spec.pop("cron", None)
    delay = float(spec.pop("delay", 0) or 0)
    due = now + delay * time_scale
    spec.update(createdAt=int(now * 1000), notBefore=int(due * 1000))
    return Message(new_id("msg"), spec, schedule.body, 0, due)


class Scheduler:
    """Fires due schedules into the dispatcher."""

    def __init__(self, store: Store, dispatcher: Dispatcher, *, time_scale: float = 1.0) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.time_scale = time_scale
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="qstash-scheduler", daemon=True)

    def start(self) -> None:
        """Start firing schedules."""
        self._thread.start()

    def stop(self) -> None:
        """Stop firing schedules."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def changed(self) -> None:
        """Look at the schedules again (one was created, changed or resumed)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping:
            try:
                wait = self.tick(time.time())
            except Exception:
                log.exception("scheduler tick failed")
                wait = 1.0
            self._wake.wait(min(wait, 1.0))
            self._wake.clear()

    def tick(self, now: float) -> float:
        """Fire every due schedule; return the seconds until the next one is due."""
        waits = [1.0]
        for schedule in self.store.schedules():
            if schedule.paused:
                continue
            if schedule.next_at <= now:
                message = firing(schedule, now, self.time_scale)
                following = next_fire(schedule.spec["cron"], now, self.time_scale)
                self.store.fire_schedule(schedule.id, message, now=now, next_at=following)
                self.dispatcher.events.created([message])
                self.dispatcher.push([message])
                waits.append(following - now)
            else:
                waits.append(schedule.next_at - now)
        return max(0.0, min(waits))
