"""The job settings: read from the environment, and refused at start-up when unusable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import resend

from app import create_app
from app.errors import ConfigurationError
from app.mail import PooledHTTPClient
from app.testing import DeliveryClient
from jobs.email import TEMPLATES
from tests.jobs.recorder import recording_server


def test_bad_allowed_network_stops_start_up(job_config: dict[str, Any]) -> None:
    """An unparsable WEBHOOK_ALLOWED_NETWORKS entry refuses to start, naming the setting."""
    with pytest.raises(ConfigurationError, match="WEBHOOK_ALLOWED_NETWORKS"):
        create_app({**job_config, "WEBHOOK_ALLOWED_NETWORKS": ["10.0.0.0/33"]})


def test_bad_storage_url_stops_start_up(job_config: dict[str, Any]) -> None:
    """A STORAGE_URL that is not s3://bucket/prefix refuses to start."""
    with pytest.raises(ConfigurationError, match="STORAGE_URL"):
        create_app({**job_config, "STORAGE_URL": "ftp://files/x"})


def test_settings_come_from_the_environment(
    job_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job settings are read from plain environment variables, parsed."""
    monkeypatch.setenv("WEBHOOK_ALLOWED_NETWORKS", "10.1.0.0/16, 192.168.0.0/24")
    monkeypatch.setenv("IMAGE_MAX_PIXELS", "1000")
    monkeypatch.setenv("EMAIL_FROM", "Team <team@example.com>")
    config = {k: v for k, v in job_config.items() if k not in {"WEBHOOK_ALLOWED_NETWORKS"}}
    app = create_app(config)
    assert app.config["WEBHOOK_ALLOWED_NETWORKS"] == ["10.1.0.0/16", "192.168.0.0/24"]
    assert app.config["IMAGE_MAX_PIXELS"] == 1000
    assert app.config["EMAIL_FROM"] == "Team <team@example.com>"


def test_resend_api_url_from_the_environment_is_used(
    job_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """RESEND_API_URL in the environment (the SDK's own variable) points sends at it."""
    saved = (resend.api_key, resend.api_url, resend.default_http_client)
    try:
        with recording_server() as server:
            monkeypatch.setenv("RESEND_API_URL", server.url)
            config = {k: v for k, v in job_config.items() if k != "RESEND_API_URL"}
            app = create_app({**config, "RESEND_API_KEY": "re_env"})
            payload = {"to": "a@example.com", "template": "welcome"}
            payload["data"] = TEMPLATES["welcome"].sample
            response = DeliveryClient(app).deliver("send-email", payload)
        assert response.status_code == 200, response.get_json()
        assert [r.path for r in server.requests] == ["/emails"]
    finally:
        if isinstance(resend.default_http_client, PooledHTTPClient):
            resend.default_http_client.close()
        resend.api_key, resend.api_url, resend.default_http_client = saved
