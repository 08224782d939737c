"""The guard under gunicorn: concurrent duplicates and a crashed worker's claim."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select

from app.qstash.signature import sign
from app.store.schema import claims
from tests.conftest import CURRENT_KEY, NEXT_KEY
from tests.servers import Server, gunicorn

pytestmark = pytest.mark.e2e

APP_URL = "https://ops.example.com"


def server_env(database_url: str, side_effects: Path, **extra: str) -> dict[str, str]:
    """Return the environment of a gunicorn serving the ops test jobs on ``database_url``."""
    return {
        "QSTASH_CURRENT_SIGNING_KEY": CURRENT_KEY,
        "QSTASH_NEXT_SIGNING_KEY": NEXT_KEY,
        "APP_URL": APP_URL,
        "JOBS_PACKAGES": "tests.ops.e2e_jobs",
        "DATABASE_URL": database_url,
        "OPS_SIDE_EFFECTS": str(side_effects),
        **extra,
    }


def deliver(
    server: Server, job: str, message_id: str, body: bytes = b"{}", timeout: float = 20
) -> httpx.Response:
    """POST one signed delivery of ``body`` to ``job`` over a new connection."""
    headers = {
        "Upstash-Signature": sign(body, url=f"{APP_URL}/api/jobs/{job}", key=CURRENT_KEY),
        "Upstash-Message-Id": message_id,
        "Content-Type": "application/json",
    }
    return httpx.post(
        f"{server.url}/api/jobs/{job}", content=body, headers=headers, timeout=timeout
    )


def runs(side_effects: Path) -> list[str]:
    return side_effects.read_text().splitlines() if side_effects.exists() else []


@pytest.mark.parametrize(
    "workers",
    [("--worker-class", "sync"), ("--worker-class", "gthread", "--threads", "8")],
    ids=["sync", "gthread"],
)
def test_twenty_simultaneous_duplicates_run_once(
    tmp_path: Path, database_url: str, workers: tuple[str, ...]
) -> None:
    """The same signed delivery sent 20 times at once: one run, every answer 200 or 503.

    With threaded workers, several duplicates reach the same process at once too.
    """
    effects = tmp_path / "effects.txt"
    env = server_env(database_url, effects)
    with gunicorn(tmp_path, env, workers=4, args=workers) as server:
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda _: deliver(server, "side-effect", "msg_dup"), range(20)))
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses  # the duplicates really overlapped the run
    assert len(runs(effects)) == 1
    assert all(a.json() == {"done": "msg_dup"} for a in answers if a.status_code == 200)
    assert all(int(a.headers["Retry-After"]) >= 1 for a in answers if a.status_code == 503)


def test_crashed_workers_claim_is_taken_over(tmp_path: Path, database_url: str) -> None:
    """A worker dies mid-delivery; retries answer 503 until its claim's lease ends, then
    the message runs exactly once more."""
    effects = tmp_path / "effects.txt"
    env = server_env(database_url, effects, DUPLICATE_LEASE_SECONDS="2")
    with gunicorn(tmp_path, env, workers=2) as server:
        with pytest.raises(httpx.TransportError):
            deliver(server, "die-once", "msg_crash")
        retry = deliver(server, "die-once", "msg_crash")
        assert retry.status_code == 503 and int(retry.headers["Retry-After"]) <= 2
        time.sleep(int(retry.headers["Retry-After"]) + 0.2)
        taken = deliver(server, "die-once", "msg_crash")
        again = replayed(server, "die-once", "msg_crash")
    assert taken.status_code == 200 and taken.json() == {"survived": True}
    assert again.json() == {"survived": True}
    assert len(runs(effects)) == 1
    engine = create_engine(database_url)
    with engine.connect() as conn:
        row = conn.execute(select(claims.c.state, claims.c.takeovers)).one()
    engine.dispose()
    assert tuple(row) == ("done", 1)


def replayed(server: Server, job: str, message_id: str) -> httpx.Response:
    """Redeliver a completed message until it is answered from the store, as QStash would.

    Another worker may still be writing "done" for a few milliseconds and answer 503.
    """
    deadline = time.monotonic() + 5
    while True:
        answer = deliver(server, job, message_id)
        if answer.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert answer.headers["X-Duplicate-Delivery"] == "replayed", answer.text
    return answer
