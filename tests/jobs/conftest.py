"""Fixtures for the job modules: the real app with the default (discovered) registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.testing import DeliveryClient
from tests.conftest import TEST_CONFIG


@pytest.fixture
def job_config(tmp_path: Path) -> dict[str, Any]:
    """Return a test configuration whose folders all live under ``tmp_path``."""
    return {
        **TEST_CONFIG,
        "STORAGE_ROOT": str(tmp_path / "storage"),
        "EMAIL_OUTBOX": None,
        "RESEND_API_KEY": None,
        "WEBHOOK_ALLOWED_NETWORKS": [],
    }


def make_app(config: dict[str, Any], instance: Path) -> Flask:
    """Create the app with every discovered job, its instance folder at ``instance``."""
    app = create_app(config)
    app.instance_path = str(instance)
    return app


@pytest.fixture
def app(job_config: dict[str, Any], tmp_path: Path) -> Flask:
    return make_app(job_config, tmp_path / "instance")


@pytest.fixture
def client(app: Flask) -> DeliveryClient:
    return DeliveryClient(app)
