"""The store writer's connections on SQLite: all opened once the first write is done, none
later, so a worker's open descriptors stay flat (the soak test checks them under gunicorn)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import event

from app import create_app
from app.store import Store, get_store
from app.store import writer as writer_module
from app.testing import DeliveryClient
from tests.conftest import Calls, make_registry
from tests.ops.conftest import close_store, ops_config


def test_checkpoints_meeting_writes_open_no_connection_after_the_first_write(
    calls: Calls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The thread checkpoints on a connection it opens at its first tick; the writes take
    the engine's pool's. With a checkpoint on every tick of the thread while this thread
    writes without pause, the two meet hundreds of times: no connection opens after the
    first write, and every checkpoint succeeds."""
    monkeypatch.setattr(writer_module, "CHECKPOINT_EVERY", 0)  # read by the thread
    caplog.set_level(logging.WARNING, logger="app.store")
    flask_app: Flask = create_app(
        ops_config(f"sqlite:///{tmp_path / 'store.sqlite3'}"), registry=make_registry(calls)
    )
    try:
        store: Store | None = get_store(flask_app)
        assert store is not None
        store.writer.delay = 0.001  # set before its thread starts
        opened: list[float] = []
        event.listen(store.engine, "connect", lambda *_: opened.append(time.monotonic()))
        client = DeliveryClient(flask_app)
        assert client.deliver("noop", {}, message_id="msg_first").status_code == 200
        deadline = time.monotonic() + 5  # until the thread has checkpointed and written it
        while len(opened) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        at_start = len(opened)
        for n in range(300):
            assert client.deliver("noop", {}, message_id=f"msg_{n}").status_code == 200
            assert store.flush()
        # The thread's for checkpoints and the pool's for writes, both from the start.
        assert (at_start, len(opened)) == (2, 2)
        store_logs = [r.getMessage() for r in caplog.records if r.name.startswith("app.store")]
        assert store_logs == []
    finally:
        close_store(flask_app)
