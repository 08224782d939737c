"""The duplicate-delivery guard: each (job, message id) runs once, across processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask, current_app
from sqlalchemy import Engine, create_engine, select

from app import create_app
from app.jobs import JobRegistry
from app.qstash.receiver import Delivery
from app.store import Store, claims
from app.store.claimer import Claimer
from app.store.schema import deliveries
from app.testing import DeliveryClient
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
    dead = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    monkeypatch.setattr(store.guard, "claimer", Claimer(dead))
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
        claimer = current_app.extensions["qstash_jobs.store"].guard.claimer
        an_hour_on = now_ms() + 3600 * 1000
        assert delivery.message_id is not None
        duplicate = claimer.claim("report", delivery.message_id, now_ms=an_hour_on, lease_ms=1)
        meanwhile.append(duplicate)

    flask_app = create_app(ops_config(database_url, DUPLICATE_LEASE_SECONDS=60), registry=registry)
    response = DeliveryClient(flask_app).deliver("report", {}, message_id="msg_long")
    close_store(flask_app)
    assert response.status_code == 200
    assert [type(result) for result in meanwhile] == [claims.Busy]
