"""Configuration: Upstash's variable names, fail-closed start-up and explicit dev modes."""

from __future__ import annotations

import logging

import pytest
from flask import Flask

from app import config, create_app
from app.errors import ConfigurationError
from app.jobs import JobRegistry
from app.qstash.signature import sign
from app.testing import DeliveryClient

KEYS = {
    "QSTASH_CURRENT_SIGNING_KEY": "sig_current_0123456789abcdefghijk",
    "QSTASH_NEXT_SIGNING_KEY": "sig_next_0123456789abcdefghijklmno",
    "APP_URL": "https://jobs.example.com",
}


def loaded(environ: dict[str, str]) -> Flask:
    app = Flask("t")
    config.load(app, environ=environ)
    return app


def test_environment_uses_upstash_names_and_types() -> None:
    """QSTASH_* variables are read by their Upstash names and parsed to their types."""
    app = loaded(
        {
            **KEYS,
            "QSTASH_TOKEN": "tok",
            "QSTASH_URL": "http://127.0.0.1:9999",
            "QSTASH_CLOCK_TOLERANCE": "2.5",
            "QSTASH_MAX_BODY_SIZE": "2048",
            "JOBS_PACKAGES": "jobs, extra_jobs",
        }
    )
    assert app.config["QSTASH_TOKEN"] == "tok"
    assert app.config["QSTASH_URL"] == "http://127.0.0.1:9999"
    assert app.config["QSTASH_CLOCK_TOLERANCE"] == 2.5
    assert app.config["QSTASH_MAX_BODY_SIZE"] == 2048
    assert app.config["JOBS_PACKAGES"] == ["jobs", "extra_jobs"]


def test_defaults_apply_when_unset() -> None:
    """Unset variables fall back to documented defaults (tolerance 5 s, 1 MiB bodies)."""
    app = loaded({})
    assert app.config["QSTASH_CLOCK_TOLERANCE"] == 5
    assert app.config["QSTASH_MAX_BODY_SIZE"] == 1024 * 1024
    assert app.config["QSTASH_URL"] == "https://qstash.upstash.io"


def test_flask_prefixed_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other settings come from FLASK_-prefixed variables, parsed as JSON where possible."""
    monkeypatch.setenv("FLASK_QSTASH_MAX_BODY_SIZE", "4096")
    app = loaded({})
    assert app.config["QSTASH_MAX_BODY_SIZE"] == 4096


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("QSTASH_CLOCK_TOLERANCE", "soon", "must be a number"),
        ("QSTASH_MAX_BODY_SIZE", "-1", "must not be negative"),
        ("QSTASH_DEV", "maybe", "QSTASH_DEV must be"),
    ],
)
def test_bad_values_fail_with_the_variable_named(name: str, value: str, message: str) -> None:
    """A malformed variable stops start-up with its name in the message."""
    with pytest.raises(ConfigurationError, match=message):
        loaded({name: value})


def test_missing_keys_refuse_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without signing keys and APP_URL the app refuses to start and names them."""
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError) as info:
        create_app({"TESTING": True}, registry=JobRegistry())
    message = str(info.value)
    assert all(name in message for name in KEYS)


def test_missing_next_key_alone_refuses_to_start() -> None:
    """A half-configured key pair is refused too: rotation would break deliveries."""
    with pytest.raises(ConfigurationError, match="QSTASH_NEXT_SIGNING_KEY"):
        create_app({**KEYS, "QSTASH_NEXT_SIGNING_KEY": ""}, registry=JobRegistry())


@pytest.mark.parametrize("url", ["jobs.example.com", "ftp://x.test", "https://x.test/?a=1"])
def test_app_url_must_be_absolute_http(url: str) -> None:
    """APP_URL must be an absolute http(s) base URL without query."""
    with pytest.raises(ConfigurationError, match="APP_URL"):
        create_app({**KEYS, "APP_URL": url}, registry=JobRegistry())


def test_dev_mode_uses_public_identity_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    """QSTASH_DEV=1 fills in Upstash's dev token, keys and URL, and warns loudly."""
    with caplog.at_level(logging.WARNING):
        app = create_app({"QSTASH_DEV": True}, registry=JobRegistry())
    for name, value in config.DEV_IDENTITY.items():
        assert app.config[name] == value
    assert app.config["APP_URL"] == config.DEV_APP_URL
    assert "PUBLIC" in caplog.text
    assert DeliveryClient(app).get("/healthz").get_json()["signing"] == "dev-keys"


def test_dev_mode_keeps_explicit_values() -> None:
    """Values the user set explicitly win over the dev identity."""
    app = create_app(
        {"QSTASH_DEV": True, "QSTASH_URL": "http://127.0.0.1:9000"}, registry=JobRegistry()
    )
    assert app.config["QSTASH_URL"] == "http://127.0.0.1:9000"


def test_unsigned_without_debug_refuses_to_start() -> None:
    """QSTASH_ALLOW_UNSIGNED without FLASK_DEBUG is a configuration error, not a silent hole."""
    with pytest.raises(ConfigurationError, match="FLASK_DEBUG"):
        create_app({**KEYS, "QSTASH_ALLOW_UNSIGNED": True}, registry=JobRegistry())


def unsigned_app(calls: list[object]) -> Flask:
    registry = JobRegistry()
    registry.job("noop")(lambda payload, delivery: calls.append(delivery) or {"ok": True})
    return create_app(
        {"DEBUG": True, "QSTASH_ALLOW_UNSIGNED": True, "APP_URL": "http://127.0.0.1:5000"},
        registry=registry,
    )


def test_unsigned_mode_accepts_calls_without_signature(caplog: pytest.LogCaptureFixture) -> None:
    """With FLASK_DEBUG=1 and QSTASH_ALLOW_UNSIGNED=1 a plain curl call runs the job."""
    calls: list[object] = []
    with caplog.at_level(logging.WARNING):
        app = unsigned_app(calls)
    assert "WITHOUT a signature" in caplog.text
    response = app.test_client().post("/api/jobs/noop", json={"a": 1})
    assert response.status_code == 200
    assert len(calls) == 1 and not calls[0].verified  # type: ignore[attr-defined]


def test_unsigned_mode_still_verifies_signed_calls() -> None:
    """A request that carries a signature is verified even in unsigned mode."""
    calls: list[object] = []
    app = unsigned_app(calls)
    token = sign(b"{}", url="http://127.0.0.1:5000/api/jobs/noop", key="sig_x" * 7)
    response = app.test_client().post(
        "/api/jobs/noop", data=b"{}", headers={"Upstash-Signature": token}
    )
    assert response.status_code == 401
    assert calls == []
