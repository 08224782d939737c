"""On PostgreSQL a delivery waits for one database round trip before its handler, none after.

Counted with libpq's own trace of every message each connection sends: a ``Sync`` or a
``Query`` from the client is answered by the server before the client goes on, so each
is one round trip, whatever SQLAlchemy or psycopg do above (a ping, a ``BEGIN``, a
``COMMIT`` would each show up).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from app import create_app
from app.delivery import Delivery
from app.jobs import JobRegistry
from app.store import Store, get_store
from app.store.schema import claims
from app.testing import DeliveryClient
from tests.ops.conftest import close_store, ops_config, reset_postgres

Trips = Callable[[], list[datetime]]


@pytest.fixture
def round_trips(postgres_url: str | None, tmp_path: Path) -> Iterator[Trips]:
    """Trace every PostgreSQL connection opened from now on; yield a function that stops
    the tracing and returns when each round trip started."""
    if postgres_url is None:
        pytest.skip("no PostgreSQL server reachable (set TEST_DATABASE_URL)")
    reset_postgres(postgres_url)
    traced: list[tuple[Any, int, Path]] = []

    def trace(dbapi_connection: Any, record: Any) -> None:
        path = Path(tempfile.mkstemp(dir=tmp_path, suffix=".trace")[1])
        fd = os.open(path, os.O_WRONLY)
        dbapi_connection.pgconn.trace(fd)
        traced.append((dbapi_connection.pgconn, fd, path))

    def stop() -> list[datetime]:
        starts = []
        for pgconn, fd, path in traced:
            pgconn.untrace()  # flushes the trace
            os.close(fd)
            # "<time>\tF\t<length>\tSync": F, the client; a SQL text may span lines.
            for at in re.findall(r"^(.+?)\tF\t\d+\t(?:Sync|Query)\b", path.read_text(), re.M):
                starts.append(datetime.strptime(at, "%Y-%m-%d %H:%M:%S.%f"))
        traced.clear()
        return sorted(starts)

    event.listen(Engine, "connect", trace)
    try:
        yield stop
    finally:
        event.remove(Engine, "connect", trace)
        stop()


def test_a_delivery_makes_one_round_trip_before_its_handler_and_none_after(
    postgres_url: str, round_trips: Trips
) -> None:
    """A new message: the claim, one statement. Its completion, its release after a
    failure and its log row are written later, by the store's writer. A redelivery of a
    completed message: the same one statement, and the handler does not run."""
    handler_at: dict[str, datetime] = {}
    registry = JobRegistry()

    @registry.job("count")
    def count(payload: dict[str, bool], delivery: Delivery) -> dict[str, bool]:
        assert delivery.message_id is not None
        handler_at[delivery.message_id] = datetime.now()
        if payload["fail"]:
            raise RuntimeError("upstream down")
        return {"ok": True}

    app = create_app(ops_config(postgres_url), registry=registry)
    store: Store | None = get_store(app)
    assert store is not None
    store.writer.delay = 3600  # set before its thread starts: it writes only when flushed
    store.writer.batch = 1  # every delivery fills a batch: still not written on its path
    client = DeliveryClient(app)
    client.deliver("count", {"fail": False}, message_id="msg_warm")  # the pool connects
    assert store.flush()
    warmed_at = handler_at["msg_warm"]  # the redelivery below must not change it

    spans: dict[str, tuple[datetime, datetime]] = {}
    for message_id, fail in [("msg_ok", False), ("msg_failed", True), ("msg_warm", False)]:
        start = datetime.now()
        client.deliver("count", {"fail": fail}, message_id=message_id).close()
        spans[message_id] = (start, datetime.now())
    trips = round_trips()
    with store.read() as conn:  # the one round trip committed the claim: others see it
        query = select(claims.c.state).where(claims.c.message_id == "msg_ok")
        assert conn.execute(query).scalar() == "running"

    def counted(message_id: str) -> tuple[int, int]:
        """Round trips of one delivery: before its handler ran, and after."""
        start, end = spans[message_id]
        ran = handler_at[message_id] if handler_at[message_id] > start else end
        return sum(start <= at < ran for at in trips), sum(ran <= at <= end for at in trips)

    try:
        assert counted("msg_ok") == (1, 0)
        assert counted("msg_failed") == (1, 0)
        assert counted("msg_warm") == (1, 0)  # replayed, the handler not run again
        assert handler_at["msg_warm"] == warmed_at
    finally:
        close_store(app)
