"""State survives a restart: schedules catch up once, queues stay paused, messages wait."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from app.devserver import DevServer
from app.devserver.events import EventLog
from app.devserver.records import Schedule
from app.devserver.scheduler import Scheduler
from app.devserver.store import Store
from tests.devserver.endpoint import Endpoint


def client(server: DevServer) -> httpx.Client:
    """Return an API client for ``server``."""
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"})


def test_missed_firings_happen_once(tmp_path: Path) -> None:
    """A schedule due three times while the server was down fires once, then waits."""
    store = Store(tmp_path / "q.db")
    spec = {
        "url": "http://127.0.0.1:9/x",
        "method": "POST",
        "headers": {},
        "retries": 0,
        "flowControl": None,
        "cron": "* * * * *",
        "queueName": None,
    }
    # Mid-minute, so that now + 1 cannot reach the next firing of "* * * * *".
    now = time.time() // 60 * 60 + 20
    store.upsert_schedule(Schedule("scd_1", spec, b"", False, now - 600, now - 180, None))

    class Recorder:
        def __init__(self) -> None:
            self.pushed: list[object] = []
            self.events = EventLog(store)

        def push(self, messages: list[object]) -> None:
            self.pushed.extend(messages)

    recorder = Recorder()
    scheduler = Scheduler(store, recorder, time_scale=1.0)  # type: ignore[arg-type]
    scheduler.tick(now)
    scheduler.tick(now + 1)
    assert len(recorder.pushed) == 1
    assert len(store.pending()) == 1
    assert now < store.schedule("scd_1").next_at <= now + 60  # type: ignore[union-attr]
    store.close()


def test_paused_queue_and_pending_messages_survive_a_restart(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    """A paused queue is still paused after a restart and its message waits, then delivers."""
    db = tmp_path / "q.db"
    with DevServer(db=db, time_scale=0.01).running(port=0) as server, client(server) as api:
        api.post("/v2/queues", json={"queueName": "held", "parallelism": 1, "paused": True})
        message_id = api.post(f"/v2/enqueue/held/{endpoint.url('/after')}").json()["messageId"]
    with DevServer(db=db, time_scale=0.01).running(port=0) as server, client(server) as api:
        time.sleep(0.3)
        assert endpoint.at("/after") == []
        assert api.get(f"/v2/messages/{message_id}").status_code == 200
        api.post("/v2/queues/held/resume")
        assert endpoint.wait_for("/after", 1)[0].headers["Upstash-Message-Id"] == message_id
