"""Workflow guarantees under real servers: gunicorn (2 workers) behind the bundled dev server.

Each step of ``tests.workflows.flows`` appends its begin and its effect to a file outside
the store (``effects.py``), so these tests count what really ran per (run, step):

- every message delivered again, and starts and pokes sent concurrently: each step once;
- a worker SIGKILLed in the middle of a step (main line or parallel branch): the run
  completes after the lease runs out, the killed step ran again (it never completed),
  every step that completed ran once;
- many concurrent runs of a five-step workflow with a sleep: all complete, each step once.

On SQLite and on PostgreSQL (``TEST_DATABASE_URL``, as the unit tests in this folder).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from app.config import DEV_IDENTITY
from app.devserver import DevServer
from app.devserver.delivery import AttemptEvent
from app.qstash.signature import sign
from tests.servers import Server, free_port, gunicorn

pytestmark = pytest.mark.e2e

FIVE_STEPS = ("one", "two", "three", "four", "five")
MIXED_STEPS = ("one", "left", "right", "last")
#: Runs of the many-runs test (200 in CI; the report's figures: 1000), and of the random
#: kills test: half as many, one kill per 40 runs (at least 4).
MANY_RUNS = int(os.environ.get("WF_E2E_RUNS", "200"))
CHAOS_RUNS = MANY_RUNS // 2
CHAOS_KILLS = max(4, CHAOS_RUNS // 40)
KEY = DEV_IDENTITY["QSTASH_CURRENT_SIGNING_KEY"]


@dataclass
class Stack:
    """The dev server, the app under gunicorn, the effects file and the app's store."""

    dev: DevServer
    app: Server
    app_url: str
    effects: Path
    gates: Path
    db: Engine
    api: httpx.Client
    direct: httpx.Client
    #: What the dev server's deliveries were answered, for failure messages.
    attempts: list[str] = field(default_factory=list)

    def start_body(self, workflow: str, run_id: str, payload: Any) -> dict[str, Any]:
        """The batch entry ``Workflow.start`` publishes for ``run_id``."""
        return {
            "destination": f"{self.app_url}/api/jobs/{workflow}?run={run_id}",
            "headers": {
                "Content-Type": "application/json",
                "Upstash-Deduplication-Id": f"wf-start.{run_id}",
                "Upstash-Retries": "20",
                "Upstash-Retry-Delay": "200",
            },
            "body": json.dumps(payload),
        }

    def start(self, workflow: str, run_ids: list[str], payload: Any = None) -> None:
        """Start runs through the dev server, 100 per batch."""
        for first in range(0, len(run_ids), 100):
            batch = [self.start_body(workflow, r, payload) for r in run_ids[first : first + 100]]
            response = self.api.post("/v2/batch", json=batch)
            assert response.status_code in (200, 201), response.text

    def deliver(self, path_and_query: str, body: bytes, message_id: str) -> httpx.Response:
        """Send one signed delivery straight to the app, as the dev server would."""
        url = f"{self.app_url}{path_and_query}"
        headers = {
            "Upstash-Signature": sign(body, url=url, key=KEY),
            "Upstash-Message-Id": message_id,
            "Upstash-Retried": "0",
            "Content-Type": "application/json",
        }
        return self.direct.post(url, content=body, headers=headers)

    def notify(self, runs: list[str]) -> None:
        """Publish each run's event (``confirm:<run>``) through the dev server."""
        batch = [
            {
                "destination": f"{self.app_url}/api/workflows/events/confirm:{run_id}",
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps({"ok": run_id}),
            }
            for run_id in runs
        ]
        response = self.api.post("/v2/batch", json=batch)
        assert response.status_code in (200, 201), response.text

    def output(self, run_id: str) -> Any:
        query = text("SELECT output FROM workflow_runs WHERE id = :r")
        with self.db.connect() as conn:
            return json.loads(conn.execute(query, {"r": run_id}).scalar_one())

    def lines(self) -> list[dict[str, Any]]:
        """Every begin and effect line written so far."""
        if not self.effects.exists():
            return []
        return [json.loads(line) for line in self.effects.read_text().splitlines()]

    def count(self, phase: str) -> Counter[tuple[str, str]]:
        """How many ``phase`` lines each (run, step) has."""
        return Counter((r["run"], r["step"]) for r in self.lines() if r["phase"] == phase)

    def states(self, workflow: str) -> dict[str, int]:
        query = text("SELECT state, count(*) FROM workflow_runs WHERE workflow = :w GROUP BY state")
        with self.db.connect() as conn:
            return {state: int(n) for state, n in conn.execute(query, {"w": workflow})}

    def wait_created(self, workflow: str, runs: int, timeout: float = 60) -> None:
        """Wait until ``runs`` runs of ``workflow`` exist."""
        deadline = time.monotonic() + timeout
        while sum(self.states(workflow).values()) < runs:
            assert time.monotonic() < deadline, self.states(workflow)
            time.sleep(0.05)

    def wait_completed(self, workflow: str, runs: int, timeout: float) -> float:
        """Wait until ``runs`` runs of ``workflow`` completed; return when (monotonic)."""
        deadline = time.monotonic() + timeout
        states: dict[str, int] = {}
        while time.monotonic() < deadline:
            states = self.states(workflow)
            if states.get("completed", 0) >= runs:
                return time.monotonic()
            if states.get("failed"):
                break
            time.sleep(0.1)
        with self.db.connect() as conn:
            bad = conn.execute(
                text("SELECT id, state, error FROM workflow_runs WHERE state <> 'completed'")
            ).fetchmany(5)
        tail = self.app.output()[-3000:]
        answers = "\n".join(self.attempts[-20:])
        raise AssertionError(
            f"{workflow}: {states} of {runs} runs; e.g. {bad}\n{tail}\nanswers:\n{answers}"
        )

    def steps(self, run_id: str) -> list[tuple[int, int, str, str, int]]:
        query = text(
            "SELECT position, branch, name, state, attempts FROM workflow_steps"
            " WHERE run_id = :r ORDER BY position, branch"
        )
        with self.db.connect() as conn:
            return [tuple(row) for row in conn.execute(query, {"r": run_id})]

    def due_soon(self) -> list[Any]:
        """The dev server's messages due in the next 5 s (not an event wait's timeout)."""
        return [m for m in self.dev.store.pending() if m.due < time.time() + 5]

    def wait_quiet(self, idle: Callable[[], bool], timeout: float = 30) -> None:
        """Wait until no message is due soon and ``idle()`` held for 0.5 s."""
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            if not self.due_soon() and idle():
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= 0.5:
                    return
            else:
                quiet_since = None
            time.sleep(0.05)
        raise AssertionError(f"still busy after {timeout} s: {self.due_soon()[:3]}")

    def wait_line(self, run_id: str, step: str, phase: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines():
                if (line["run"], line["step"], line["phase"]) == (run_id, step, phase):
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no {phase} of {step} in {run_id}:\n{self.app.output()[-3000:]}")


@contextmanager
def stack(tmp: Path, database_url: str, **env: str) -> Iterator[Stack]:
    """The dev server (in this process) delivering to gunicorn with two workers."""
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    effects, gates = tmp / "effects.jsonl", tmp / "gates"
    gates.mkdir()
    db = create_engine(database_url, poolclass=NullPool)  # no connection outlives a read
    with DevServer(db=tmp / "qstash.db").running(port=0) as dev:
        settings = {
            **dev.env(),
            "QSTASH_DEV": "1",
            "APP_URL": app_url,
            "JOBS_PACKAGES": "tests.workflows.flows",
            "DATABASE_URL": database_url,
            "WF_EFFECTS": str(effects),
            "WF_GATES": str(gates),
            "LOG_LEVEL": "warning",
            **env,
        }
        auth = {"Authorization": f"Bearer {dev.token}"}
        with (
            httpx.Client(base_url=dev.url, headers=auth, timeout=30) as api,
            httpx.Client(timeout=30) as direct,
            gunicorn(tmp, settings, port=port, workers=2) as app,
        ):
            running = Stack(dev, app, app_url, effects, gates, db, api, direct)
            dev.on_attempt(lambda event: running.attempts.append(answer_line(event)))
            try:
                yield running
            finally:
                db.dispose()


def answer_line(event: AttemptEvent) -> str:
    response = event.response
    body = response.body[:200].decode(errors="replace") if response.body else response.error
    return f"{event.message.spec['url']} retried={event.message.retried} {response.status} {body}"


def workers_of(server: Server) -> set[int]:
    """The pids of gunicorn's worker processes (children of its master)."""
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return {int(pid) for pid in children.read_text().split()}


@pytest.mark.parametrize("budget", ["0", "2"])
def test_duplicate_deliveries_and_concurrent_pokes_run_each_step_once(
    tmp_path: Path, database_url: str, budget: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every message delivered again, starts sent 4 times at once, pokes racing: once each.

    ``wf-mixed`` has every kind of step (run, parallel, sleep, wait_for_event). Each run's
    start is one message sent four times at once; every delivery of the dev server is sent
    again with the same message id; pokes at random positions and branches, each sent
    twice at once, and the run's event notified three times (through the dev server,
    before and after the run reaches its wait) race with the deliveries. With
    WORKFLOW_STEP_BUDGET 0 each step has a delivery of its own (the most hand-offs to race);
    with 2 consecutive steps run inline in one delivery.
    """
    runs = [f"dup-{n}-{uuid.uuid4().hex[:8]}" for n in range(12)]
    answers: Counter[str] = Counter()
    in_flight = [0]
    lock = threading.Lock()
    resends = ThreadPoolExecutor(8)
    with stack(tmp_path, database_url, WORKFLOW_STEP_BUDGET=budget) as s:

        def deliver_again(event: AttemptEvent) -> None:
            # The same message (id, URL, body) once more, after QStash delivered it.
            spec, body, message_id = event.message.spec, event.message.body, event.message.id
            path = spec["url"].removeprefix(s.app_url)

            def send() -> None:
                try:
                    response = s.deliver(path, body, message_id)
                    verdict = response.headers.get("X-Duplicate-Delivery", "handler")
                    with lock:
                        answers[f"{response.status_code} {verdict}"] += 1
                finally:
                    with lock:
                        in_flight[0] -= 1

            with lock:
                in_flight[0] += 1
            resends.submit(send)

        s.dev.on_attempt(deliver_again)
        with ThreadPoolExecutor(16) as pool:
            for run_id in runs:
                message_id = f"msg_start_{run_id}"
                for _ in range(4):
                    pool.submit(s.deliver, f"/api/jobs/wf-mixed?run={run_id}", b"{}", message_id)
            rng = random.Random(16)
            for round_ in range(8):
                time.sleep(0.25)
                if round_ in (2, 6, 7):
                    s.notify(runs)
                for run_id in runs:
                    message_id = f"msg_poke_{uuid.uuid4().hex}"
                    path = f"/api/jobs/wf-mixed?run={run_id}&step={rng.randrange(6)}"
                    if rng.random() < 0.3:
                        path = f"/api/jobs/wf-mixed?run={run_id}&step=1&branch={rng.randrange(2)}"
                    for _ in range(2):
                        pool.submit(s.deliver, path, b"", message_id)
        s.wait_completed("wf-mixed", len(runs), timeout=90)
        # Then until every message (extra timers of the pokes too) and every copy is done.
        s.wait_quiet(lambda: in_flight[0] == 0)
        expected = Counter({(run_id, step): 1 for run_id in runs for step in MIXED_STEPS})
        assert s.count("effect") == expected
        assert s.count("begin") == expected
        for run_id in runs:
            assert [(p, b, name, st) for p, b, name, st, _ in s.steps(run_id)] == [
                (0, -1, "one", "done"),
                (1, -1, "left + right", "done"),
                (1, 0, "left", "done"),
                (1, 1, "right", "done"),
                (2, -1, "nap", "done"),
                (3, -1, "confirm", "done"),
                (4, -1, "last", "done"),
            ]
            assert s.output(run_id) == {"event": {"ok": run_id}}
        statuses = Counter(line.split()[2] for line in s.attempts)
    resends.shutdown()
    with capsys.disabled():
        print(f"\ndev server deliveries: {dict(statuses)}; sent again: {dict(answers)}")
    # The guard answered the deliveries sent again, without running the handler.
    assert answers["200 replayed"] > 0, answers


def kill_mid_step(s: Stack, run_id: str, step: str) -> int:
    """Wait until ``step`` of ``run_id`` blocks, SIGKILL its worker, open its gate."""
    line = s.wait_line(run_id, step, "effect")
    pid = int(line["pid"])
    assert pid in workers_of(s.app), "the step runs in one of gunicorn's workers"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid in workers_of(s.app) and time.monotonic() < deadline:
        time.sleep(0.02)
    (s.gates / run_id).touch()
    return pid


def test_a_worker_killed_mid_step_reruns_only_that_step(tmp_path: Path, database_url: str) -> None:
    """SIGKILL during step 2: after the lease, step 2 runs again, step 1 never does."""
    run_id = f"crash-{uuid.uuid4().hex[:8]}"
    with stack(tmp_path, database_url, DUPLICATE_LEASE_SECONDS="2") as s:
        s.start("wf-crash", [run_id], {})
        killed = kill_mid_step(s, run_id, "blocked")
        s.wait_completed("wf-crash", 1, timeout=60)
        begins = [r for r in s.lines() if r["phase"] == "begin"]
        effects = s.count("effect")
    # "before" completed (recorded) before "blocked" began: it never runs again.
    assert [r["step"] for r in begins] == ["before", "blocked", "blocked", "after-1", "after-2"]
    first, again = (r for r in begins if r["step"] == "blocked")
    assert first["pid"] == killed and again["pid"] != killed
    # Not before the lease ran out (2 s from recording "before", just before "blocked"
    # began; without it, the retry 0.2 s after the kill would have run it at once).
    assert again["at"] - first["at"] >= 1.5
    # The killed step had its effect but never completed: it ran again, effect and all.
    assert effects == Counter(
        {(run_id, "before"): 1, (run_id, "blocked"): 2, (run_id, "after-1"): 1,
         (run_id, "after-2"): 1}
    )  # fmt: skip
    steps = s.steps(run_id)
    assert [(p, name, st) for p, _, name, st, _ in steps] == [
        (0, "before", "done"),
        (1, "blocked", "done"),
        (2, "after-1", "done"),
        (3, "after-2", "done"),
    ]
    assert steps[0][4] == 1 and steps[1][4] > 1  # "blocked" was recorded by a retry


def test_a_worker_killed_mid_branch_reruns_only_that_branch(
    tmp_path: Path, database_url: str
) -> None:
    """SIGKILL during a parallel branch: that branch runs again, the other and step 1 once."""
    run_id = f"branch-{uuid.uuid4().hex[:8]}"
    with stack(tmp_path, database_url, DUPLICATE_LEASE_SECONDS="2") as s:
        s.start("wf-crash-branch", [run_id], {})
        killed = kill_mid_step(s, run_id, "right")
        s.wait_completed("wf-crash-branch", 1, timeout=60)
        begins = Counter(r["step"] for r in s.lines() if r["phase"] == "begin")
        effects = s.count("effect")
        first, again = (r for r in s.lines() if r["step"] == "right" and r["phase"] == "begin")
    assert begins == Counter({"before": 1, "left": 1, "right": 2, "after": 1})
    assert first["pid"] == killed and again["pid"] != killed
    assert again["at"] - first["at"] >= 1.5  # the branch's lease: 2 s from its claim
    assert effects == Counter(
        {(run_id, "before"): 1, (run_id, "left"): 1, (run_id, "right"): 2, (run_id, "after"): 1}
    )


def test_many_concurrent_runs_complete_with_each_step_once(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """MANY_RUNS runs of five steps and a 1 s sleep, started at once: all done, once each."""
    runs = [f"many-{n:04d}-{uuid.uuid4().hex[:6]}" for n in range(MANY_RUNS)]
    with stack(tmp_path, database_url) as s:
        started = time.monotonic()
        s.start("wf-five", runs, {"sleep": 1})
        published = time.monotonic()
        finished = s.wait_completed("wf-five", len(runs), timeout=60 + MANY_RUNS * 0.5)
        expected = Counter({(run_id, step): 1 for run_id in runs for step in FIVE_STEPS})
        assert s.count("effect") == expected
        assert s.count("begin") == expected
        assert s.states("wf-five") == {"completed": len(runs)}
        statuses = Counter(line.split()[2] for line in s.attempts)
    dialect = database_url.split(":")[0].split("+")[0]
    with capsys.disabled():
        print(
            f"\n{MANY_RUNS} runs x 5 steps + 1 s sleep on {dialect}: published in"
            f" {published - started:.2f} s, all completed in {finished - started:.2f} s;"
            f" deliveries by answer: {dict(statuses)}"
        )


def test_workers_killed_at_random_lose_no_run_and_rerun_only_killed_steps(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Workers SIGKILLed at random moments of CHAOS_RUNS ``wf-mixed`` runs (each notified
    once, through the dev server, while the kills go on): every run completes with its
    event; a step ran more than once only where every attempt but the last was in a killed
    worker (it never completed)."""
    runs = [f"chaos-{n:04d}-{uuid.uuid4().hex[:6]}" for n in range(CHAOS_RUNS)]
    killed: set[int] = set()
    rng = random.Random(7)
    with stack(tmp_path, database_url, DUPLICATE_LEASE_SECONDS="2") as s:
        s.start("wf-mixed", runs, {})
        for kill in range(CHAOS_KILLS):
            time.sleep(rng.uniform(0.3, 0.9))
            alive = sorted(workers_of(s.app))
            if alive:  # else gunicorn has not replaced the last one killed yet
                pid = rng.choice(alive)
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            if kill == 1:  # an event notified before its run started would not count
                s.wait_created("wf-mixed", len(runs))
                s.notify(runs)
        s.wait_completed("wf-mixed", len(runs), timeout=60 + CHAOS_RUNS * 0.5)
        begins: dict[tuple[str, str], list[int]] = {}
        for line in s.lines():
            if line["phase"] == "begin":
                begins.setdefault((line["run"], line["step"]), []).append(line["pid"])
        effects = s.count("effect")
        outputs = {run_id: s.output(run_id) for run_id in runs}
    assert set(begins) == {(run_id, step) for run_id in runs for step in MIXED_STEPS}
    for key, pids in begins.items():
        assert all(pid in killed for pid in pids[:-1]), (key, pids, killed)
        assert 1 <= effects[key] <= len(pids)  # a worker may die between begin and effect
    assert outputs == {run_id: {"event": {"ok": run_id}} for run_id in runs}
    again = sum(len(pids) - 1 for pids in begins.values())
    with capsys.disabled():
        print(f"\n{len(runs)} runs, {len(killed)} workers killed: {again} step attempts ran again")
