"""The duplicate-delivery guard: each (job, message id) runs once, across processes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask, Response, current_app
from sqlalchemy import Engine, create_engine, make_url, select

from app import create_app
from app.delivery import Delivery
from app.jobs import JobRegistry
from app.store import Store, claims
from app.store.direct import Connections
from app.store.engine import make_engine
from app.store.schema import claims as claims_table
from app.store.schema import deliveries
from app.testing import DeliveryClient, delivery_headers
from tests.conftest import Calls
from tests.ops.conftest import close_store, ops_config

LEASE_MS = 60_000


def now_ms() -> int:
    return int(time.time() * 1000)


def hold_claim(store: Store, job: str, message_id: str, *, lease_ms: int) -> str:
    """Claim a message as another worker would, and return its token."""
    with store.engine.begin() as conn:
        result = claims.claim(conn, job, message_id, now_ms=now_ms(), lease_ms=lease_ms)
    assert isinstance(result, claims.Acquired)
    return result.token


def test_redelivery_of_a_completed_message_replays_its_answer(
    client: DeliveryClient, calls: Calls
) -> None:
    """The second delivery of a message answers the stored 200 and does not run the handler."""
    first = client.deliver("resize", {"fileKey": "a.png"}, message_id="msg_1")
    second = client.deliver("resize", {"fileKey": "a.png"}, message_id="msg_1", retried=1)
    assert len(calls) == 1
    assert (second.status_code, second.get_json()) == (200, first.get_json())
    assert second.headers["Content-Type"] == "application/json"
    assert second.headers["X-Duplicate-Delivery"] == "replayed"


def test_message_in_progress_elsewhere_answers_503_with_retry_after(
    client: DeliveryClient, store: Store, calls: Calls
) -> None:
    """While another worker holds a live claim the delivery answers 503 + Retry-After."""
    hold_claim(store, "noop", "msg_busy", lease_ms=LEASE_MS)
    response = client.deliver("noop", {}, message_id="msg_busy")
    assert response.status_code == 503
    assert 55 <= int(response.headers["Retry-After"]) <= 60
    assert response.get_json()["code"] == "delivery_in_progress"
    assert len(calls) == 0


def test_the_log_records_the_guards_answers(client: DeliveryClient, store: Store) -> None:
    """A replayed and a busy answer are logged as such; the handler's own answer is not."""
    client.deliver("noop", {}, message_id="msg_1")
    client.deliver("noop", {}, message_id="msg_1", retried=1)
    hold_claim(store, "noop", "msg_busy", lease_ms=LEASE_MS)
    client.deliver("noop", {}, message_id="msg_busy")
    store.flush()
    with store.read() as conn:
        query = select(deliveries.c.message_id, deliveries.c.guard).order_by(deliveries.c.id)
        rows = [tuple(row) for row in conn.execute(query)]
    assert rows == [("msg_1", None), ("msg_1", "replayed"), ("msg_busy", "busy")]


def test_expired_claim_is_taken_over(client: DeliveryClient, store: Store, calls: Calls) -> None:
    """A claim whose lease ran out (its worker died) is taken over and the handler runs."""
    hold_claim(store, "noop", "msg_crashed", lease_ms=-1)
    response = client.deliver("noop", {}, message_id="msg_crashed")
    assert response.status_code == 200
    assert len(calls) == 1


def test_dead_owner_cannot_complete_a_claim_taken_over(store: Store) -> None:
    """The worker that lost its claim to a takeover can neither complete nor release it."""
    stale = hold_claim(store, "noop", "msg_slow", lease_ms=-1)
    hold_claim(store, "noop", "msg_slow", lease_ms=LEASE_MS)
    with store.engine.begin() as conn:
        assert not claims.complete(
            conn,
            "noop",
            "msg_slow",
            stale,
            now_ms=now_ms(),
            status=200,
            content_type=None,
            body=b"",
        )
        assert not claims.release(conn, "noop", "msg_slow", stale)


@pytest.mark.parametrize("job", ["crash", "later", "give-up"])
def test_failed_attempt_releases_the_claim(client: DeliveryClient, calls: Calls, job: str) -> None:
    """After a non-2xx answer the claim is released, so QStash's retry runs the handler again."""
    client.deliver(job, {}, message_id="msg_retry")
    client.deliver(job, {}, message_id="msg_retry", retried=1)
    assert len(calls) == 2


def test_same_message_id_for_another_job_is_not_a_duplicate(
    client: DeliveryClient, calls: Calls
) -> None:
    """Claims are per (job, message id)."""
    client.deliver("noop", {}, message_id="msg_shared")
    client.deliver("resize", {"fileKey": "k"}, message_id="msg_shared")
    assert len(calls) == 2


def test_overlong_message_id_is_run_not_stored(client: DeliveryClient, calls: Calls) -> None:
    """A message id wider than the claims column is not deduplicated, and never a 500."""
    long_id = "m" * 5000
    answers = [client.deliver("noop", {}, message_id=long_id).status_code for _ in range(2)]
    assert answers == [200, 200]
    assert len(calls) == 2


@pytest.fixture
def opt_out_app(database_url: str) -> Iterator[tuple[Flask, list[str]]]:
    seen: list[str] = []
    registry = JobRegistry()

    @registry.job("counter", dedupe=False)
    def counter(payload: object, delivery: Delivery) -> dict[str, int]:
        seen.append(delivery.message_id or "")
        return {"n": len(seen)}

    flask_app = create_app(ops_config(database_url), registry=registry)
    yield flask_app, seen
    close_store(flask_app)


def test_job_can_opt_out(opt_out_app: tuple[Flask, list[str]]) -> None:
    """A job declared with dedupe=False runs on every delivery of the same message."""
    flask_app, seen = opt_out_app
    client = DeliveryClient(flask_app)
    answers = [client.deliver("counter", {}, message_id="msg_x").get_json() for _ in range(2)]
    assert answers == [{"n": 1}, {"n": 2}]


def test_unreachable_database_answers_503_without_running(
    client: DeliveryClient, store: Store, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard fails closed: no claim store, no handler run, QStash retries later."""
    assert store.guard is not None
    url = make_url("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    dead = make_engine(url, autocommit=True)
    monkeypatch.setattr(store.guard, "connections", Connections(dead))
    response = client.deliver("noop", {}, message_id="msg_down")
    assert response.status_code == 503
    assert response.get_json()["code"] == "guard_unavailable"
    assert "Retry-After" in response.headers
    assert len(calls) == 0


def _race(engine: Engine, outcomes: list[claims.Claim], start: threading.Barrier) -> None:
    start.wait()
    with engine.begin() as conn:
        outcomes.append(claims.claim(conn, "noop", "msg_race", now_ms=now_ms(), lease_ms=LEASE_MS))


def test_concurrent_claims_have_exactly_one_winner(store: Store) -> None:
    """Twenty connections claiming one message at the same instant: one wins, all others wait."""
    engine = create_engine(store.engine.url, pool_size=20)
    if store.engine.dialect.name == "sqlite":
        engine = store.engine  # the store's own engine sets BEGIN IMMEDIATE
    outcomes: list[claims.Claim] = []
    start = threading.Barrier(20)
    threads = [threading.Thread(target=_race, args=(engine, outcomes, start)) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    engine.dispose()
    assert len(outcomes) == 20
    assert sum(isinstance(o, claims.Acquired) for o in outcomes) == 1
    assert sum(isinstance(o, claims.Busy) for o in outcomes) == 19


def test_the_lease_covers_the_jobs_own_timeout(database_url: str) -> None:
    """A claim outlives the longest legitimate run: the job's timeout plus a margin when
    that is longer than DUPLICATE_LEASE_SECONDS; a job that opts out is not claimed; a
    name registered after its first delivery is looked up again."""
    registry = JobRegistry()

    @registry.job("slow", timeout="5m")
    def slow(payload: object, delivery: Delivery) -> None:
        return None

    @registry.job("quick", timeout=10)
    def quick(payload: object, delivery: Delivery) -> None:
        return None

    @registry.job("compound", timeout="1h30m")
    def compound(payload: object, delivery: Delivery) -> None:
        return None

    @registry.job("days", timeout=" 1d2h3m4s\t")
    def days(payload: object, delivery: Delivery) -> None:
        return None

    @registry.job("fraction", timeout=60.5)
    def fraction(payload: object, delivery: Delivery) -> None:
        return None

    @registry.job("free", dedupe=False)
    def free(payload: object, delivery: Delivery) -> None:
        return None

    flask_app = create_app(ops_config(database_url, DUPLICATE_LEASE_SECONDS=60), registry=registry)
    store = flask_app.extensions["qstash_jobs.store"]
    guard = store.guard
    with flask_app.app_context():
        assert guard._lease_ms("slow") == (300 + 30) * 1000
        assert guard._lease_ms("quick") == 60_000  # 10 s + 30 s < the configured 60 s
        assert guard._lease_ms("compound") == (5400 + 30) * 1000
        assert guard._lease_ms("days") == (93784 + 30) * 1000
        assert guard._lease_ms("fraction") == (61 + 30) * 1000  # whole seconds, rounded up
        assert guard._lease_ms("free") is None
        assert guard._lease_ms("later") == 60_000  # not registered (yet): the default

        @registry.job("later", dedupe=False)
        def later(payload: object, delivery: Delivery) -> None:
            return None

        assert guard._lease_ms("later") is None
        assert guard._lease_ms("slow") == (300 + 30) * 1000  # from the cache, unchanged
    close_store(flask_app)


def test_a_compound_timeout_keeps_a_running_claim_from_being_taken_over(database_url: str) -> None:
    """A job declared with timeout="1h30m" holds its claim that long: a duplicate
    arriving an hour into the run (past DUPLICATE_LEASE_SECONDS) is busy, not run again."""
    registry = JobRegistry()
    meanwhile: list[claims.Claim] = []

    @registry.job("report", timeout="1h30m")
    def report(payload: object, delivery: Delivery) -> None:
        store = current_app.extensions["qstash_jobs.store"]
        an_hour_on = now_ms() + 3600 * 1000
        assert delivery.message_id is not None
        with store.engine.begin() as conn:  # another worker, an hour into the run
            duplicate = claims.claim(
                conn, "report", delivery.message_id, now_ms=an_hour_on, lease_ms=1
            )
        meanwhile.append(duplicate)

    flask_app = create_app(ops_config(database_url, DUPLICATE_LEASE_SECONDS=60), registry=registry)
    response = DeliveryClient(flask_app).deliver("report", {}, message_id="msg_long")
    close_store(flask_app)
    assert response.status_code == 200
    assert [type(result) for result in meanwhile] == [claims.Busy]


GUARD_LOGGER = "app.store.guard"


def guard_logs(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """The guard's log records (level, formatted message), and any hook failure."""
    return [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if record.name == GUARD_LOGGER or record.levelno >= logging.ERROR
    ]


@pytest.fixture
def answers_app(database_url: str) -> Iterator[tuple[Flask, list[str]]]:
    """Jobs answering with a status and content type of their own, counting their runs."""
    runs: list[str] = []
    registry = JobRegistry()

    @registry.job("accept")
    def accept(payload: dict[str, int], delivery: Delivery) -> Response:
        runs.append("accept")
        return Response(b"<queued/>", status=payload["status"], content_type="application/xml")

    @registry.job("plain")
    def plain(payload: object, delivery: Delivery) -> Response:
        runs.append("plain")
        response = Response(b"done", status=200)
        del response.headers["Content-Type"]
        return response

    flask_app = create_app(ops_config(database_url), registry=registry)
    yield flask_app, runs
    close_store(flask_app)


def test_a_replay_carries_the_stored_status_content_type_and_body(
    answers_app: tuple[Flask, list[str]],
) -> None:
    """A 2xx answer of any status is stored and replayed byte for byte; an answer
    without a Content-Type is replayed with Flask's default one."""
    flask_app, runs = answers_app
    client = DeliveryClient(flask_app)
    for status in (202, 299):
        client.deliver("accept", {"status": status}, message_id=f"msg_{status}")
        replay = client.deliver("accept", {"status": status}, message_id=f"msg_{status}")
        assert (replay.status_code, replay.data) == (status, b"<queued/>")
        assert replay.headers["Content-Type"] == "application/xml"
        assert replay.headers["X-Duplicate-Delivery"] == "replayed"
    client.deliver("plain", {}, message_id="msg_plain")
    replay = client.deliver("plain", {}, message_id="msg_plain")
    assert (replay.status_code, replay.data) == (200, b"done")
    assert replay.headers["Content-Type"] == "text/html; charset=utf-8"
    assert runs == ["accept", "accept", "plain"]


def test_a_3xx_answer_releases_the_claim(answers_app: tuple[Flask, list[str]]) -> None:
    """Only 2xx is "delivered" for QStash: after a 300 the next delivery runs again."""
    flask_app, runs = answers_app
    client = DeliveryClient(flask_app)
    statuses = [client.deliver("accept", {"status": 300}, message_id="msg_3").status_code]
    statuses.append(client.deliver("accept", {"status": 300}, message_id="msg_3").status_code)
    assert statuses == [300, 300]
    assert runs == ["accept", "accept"]


def test_a_message_id_as_wide_as_the_column_is_deduplicated(
    client: DeliveryClient, calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    """200 characters are stored and deduplicated; 201 are run every time, with a warning."""
    caplog.set_level(logging.WARNING)
    widest = "m" * 200
    answers = [client.deliver("noop", {}, message_id=widest) for _ in range(2)]
    assert answers[1].headers["X-Duplicate-Delivery"] == "replayed"
    assert len(calls) == 1
    assert guard_logs(caplog) == []
    for _ in range(2):
        assert client.deliver("noop", {}, message_id="m" * 201).status_code == 200
    assert len(calls) == 3
    warning = (logging.WARNING, "message id longer than 200 characters: not deduplicated")
    assert guard_logs(caplog) == [warning, warning]


def test_a_delivery_without_message_id_runs_every_time(
    client: DeliveryClient, calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    """No Upstash-Message-Id, nothing to deduplicate on: the handler runs, nothing fails."""
    body = b"{}"
    headers = delivery_headers(client.application, "/api/jobs/noop", body)
    del headers["Upstash-Message-Id"]
    answers = [client.post("/api/jobs/noop", data=body, headers=headers) for _ in range(2)]
    assert [answer.status_code for answer in answers] == [200, 200]
    assert "X-Duplicate-Delivery" not in answers[1].headers
    assert len(calls) == 2
    assert guard_logs(caplog) == []


def test_the_guards_own_answers_fail_no_hook(
    client: DeliveryClient, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Replayed and busy answers are the guard's: after them it has nothing to complete
    or release, logs nothing and fails nothing."""
    caplog.set_level(logging.WARNING)
    client.deliver("noop", {}, message_id="msg_1")
    hold_claim(store, "noop", "msg_busy", lease_ms=LEASE_MS)
    replay = client.deliver("noop", {}, message_id="msg_1", retried=1)
    busy = client.deliver("noop", {}, message_id="msg_busy")
    assert (replay.status_code, busy.status_code) == (200, 503)
    assert busy.get_json()["message"] == (
        "this message is being handled by another worker; QStash will retry"
    )
    assert guard_logs(caplog) == []


def test_a_takeover_is_logged_with_job_and_message(
    client: DeliveryClient, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Taking over a dead worker's leased claim says which message, so it can be looked at."""
    caplog.set_level(logging.WARNING)
    hold_claim(store, "noop", "msg_crashed", lease_ms=-1)
    client.deliver("noop", {}, message_id="msg_crashed")
    took_over = "took over the expired claim on noop message msg_crashed (its worker died?)"
    assert guard_logs(caplog) == [(logging.WARNING, took_over)]


def test_an_unreachable_store_is_logged_and_answered_with_retry_after(
    client: DeliveryClient, store: Store, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The 503 names the guard and asks QStash to come back in 10 s; the log says why."""
    assert store.guard is not None

    def unreachable(*args: object, **kwargs: object) -> claims.Claim:
        raise OSError("connection refused")

    monkeypatch.setattr(store.guard.connections, "connection", unreachable)
    response = client.deliver("noop", {}, message_id="msg_down")
    assert response.headers["Retry-After"] == "10"
    assert response.get_json()["message"] == (
        "the duplicate-delivery guard cannot reach its database; QStash will retry"
    )
    assert guard_logs(caplog) == [
        (logging.ERROR, "duplicate guard: the claim store is unavailable")
    ]
    assert caplog.records[-1].exc_info is not None


@pytest.mark.parametrize("fails", [True, False], ids=["released", "completed"])
def test_a_lost_claim_is_logged_when_its_update_is_written(
    database_url: str, caplog: pytest.LogCaptureFixture, fails: bool
) -> None:
    """An attempt's release or completion is quiet; if its claim expired and was taken
    over meanwhile, it changes nothing and the log says which message, and to raise the
    lease."""
    registry = JobRegistry()

    @registry.job("flaky")
    def flaky(payload: dict[str, bool], delivery: Delivery) -> None:
        if payload["steal"]:
            assert delivery.message_id is not None
            store = current_app.extensions["qstash_jobs.store"]
            with store.engine.begin() as conn:  # another worker, a day later
                claims.claim(
                    conn, "flaky", delivery.message_id, now_ms=now_ms() + 86_400_000, lease_ms=1
                )
        if fails:
            raise RuntimeError("upstream down")

    caplog.set_level(logging.WARNING, logger="app.store")
    flask_app = create_app(ops_config(database_url), registry=registry)
    store = flask_app.extensions["qstash_jobs.store"]
    client = DeliveryClient(flask_app)
    client.deliver("flaky", {"steal": False}, message_id="msg_quiet")
    store.flush()
    store_logs = [r.getMessage() for r in caplog.records if r.name.startswith("app.store")]
    assert store_logs == []
    client.deliver("flaky", {"steal": True}, message_id="msg_stolen")
    store.flush()
    store_logs = [r.getMessage() for r in caplog.records if r.name.startswith("app.store")]
    assert store_logs == [
        "the claim on flaky message msg_stolen expired while its handler ran and was"
        " taken over; raise DUPLICATE_LEASE_SECONDS or the job's timeout"
    ]
    with store.read() as conn:  # the thief's claim, untouched
        query = select(claims_table.c.state, claims_table.c.takeovers).where(
            claims_table.c.message_id == "msg_stolen"
        )
        assert tuple(conn.execute(query).one()) == ("running", 1)
    close_store(flask_app)


def test_a_completion_is_queued_and_replayed_from_the_queue_until_written(
    client: DeliveryClient, store: Store, calls: Calls
) -> None:
    """No write on the delivery's path: "done" waits for the writer, and meanwhile a
    duplicate in this process gets the stored answer from the queue; once written, from
    the table."""
    store.writer.delay = 3600  # set before its thread starts: no write until flushed
    first = client.deliver("noop", {}, message_id="msg_1")
    assert state_of(store, "msg_1") == "running"
    replay = client.deliver("noop", {}, message_id="msg_1", retried=1)
    assert replay.headers["X-Duplicate-Delivery"] == "replayed"
    assert replay.get_json() == first.get_json()
    assert store.flush()
    assert state_of(store, "msg_1") == "done"
    again = client.deliver("noop", {}, message_id="msg_1", retried=2)
    assert again.headers["X-Duplicate-Delivery"] == "replayed"
    assert len(calls) == 1


def state_of(store: Store, message_id: str) -> str | None:
    """Return the claim's state in the table (None: no row)."""
    with store.read() as conn:
        query = select(claims_table.c.state).where(claims_table.c.message_id == message_id)
        found: str | None = conn.execute(query).scalar()
    return found


def test_a_lease_never_falls_below_the_configured_one(database_url: str) -> None:
    """A fractional DUPLICATE_LEASE_SECONDS is kept to the millisecond for jobs without
    a timeout of their own."""
    registry = JobRegistry()
    registry.job("plain")(lambda payload, delivery: None)
    flask_app = create_app(
        ops_config(database_url, DUPLICATE_LEASE_SECONDS=0.25), registry=registry
    )
    guard = flask_app.extensions["qstash_jobs.store"].guard
    with flask_app.app_context():
        assert guard._lease_ms("plain") == 250
    close_store(flask_app)
