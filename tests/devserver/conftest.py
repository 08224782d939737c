"""Fixtures: a dev server with compressed time, a recording endpoint, an API client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.devserver import DevServer
from tests.devserver.endpoint import Endpoint, running_endpoint

#: 0.01: QStash's 12 s first backoff takes 120 ms, a 1 s delay 10 ms.
TIME_SCALE = 0.01


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[DevServer]:
    with DevServer(db=tmp_path / "qstash.db", time_scale=TIME_SCALE).running(port=0) as server:
        yield server


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    with running_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
def api(dev_server: DevServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {dev_server.token}"}
    with httpx.Client(base_url=dev_server.url, headers=headers, timeout=10) as client:
        yield client
