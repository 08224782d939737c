"""Workflow tests: an app with its own registry and a SQLite store, and a stub queue."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.jobs import JobRegistry
from app.testing import StubQueue
from tests.conftest import TEST_CONFIG


@pytest.fixture
def registry() -> JobRegistry:
    return JobRegistry()


@pytest.fixture
def make_app(
    tmp_path: Path, registry: JobRegistry
) -> Iterator[Callable[..., tuple[Flask, StubQueue]]]:
    apps: list[Flask] = []

    def make(**config: Any) -> tuple[Flask, StubQueue]:
        settings = {
            **TEST_CONFIG,
            "DATABASE_URL": f"sqlite:///{tmp_path}/wf.sqlite3",
            "DELIVERY_LOG": True,
            "DUPLICATE_GUARD": True,
            **config,
        }
        app = create_app(settings, registry=registry)
        apps.append(app)
        return app, StubQueue.install(app)

    yield make
    for app in apps:
        store = app.extensions.get("qstash_jobs.store")
        if store is not None:
            store.close()
