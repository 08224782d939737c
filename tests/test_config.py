"""Configuration: Upstash's variable names, fail-closed start-up and explicit dev modes."""

from __future__ import annotations

import logging

import click
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.cli import FlaskGroup
from hypothesis import given, settings
from hypothesis import strategies as st

from app import config, create_app, serves_deliveries
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


# --- signing keys: shape at start-up ---------------------------------------------------

BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
#: Keys as the Upstash console issues them: sig_ + base58 (the dev keys have 28 characters).
real_keys = st.text(alphabet=BASE58, min_size=20, max_size=60).map(lambda body: "sig_" + body)
#: What gets pasted instead of a key: README and SDK placeholders, templates, variable names.
placeholder_keys = st.builds(
    lambda prefix, body: prefix + body,
    st.sampled_from(["", "sig_", "SIG_"]),
    st.one_of(
        st.text(alphabet=".x*X#?", max_size=12),
        st.builds(
            lambda left, mark, right: left + mark + right,
            st.text(alphabet=BASE58, max_size=10),
            st.sampled_from(["...", "..", "…", "<", ">", "${", "{{"]),
            st.text(alphabet=BASE58 + "_-}>", max_size=10),
        ),
        st.sampled_from(["changeme", "CHANGE_ME", "placeholder", "TODO", "secret", "None"]),
        st.builds(
            lambda *parts: "_".join(part for part in parts if part),
            st.sampled_from(["", "your", "YOUR", "my"]),
            st.sampled_from(["", "qstash", "QSTASH"]),
            st.sampled_from(["", "current", "NEXT"]),
            st.sampled_from(["", "signing", "SIGNING"]),
            st.sampled_from(["key", "KEY", "token"]),
        ),
    ),
)


@settings(max_examples=60)
@given(current=real_keys, next_key=real_keys)
def test_keys_of_upstash_shape_start_and_report_keys(current: str, next_key: str) -> None:
    """Any key shaped like the console's (sig_ + base58) is accepted, and healthz says so."""
    app = create_app(
        {**KEYS, "QSTASH_CURRENT_SIGNING_KEY": current, "QSTASH_NEXT_SIGNING_KEY": next_key},
        registry=JobRegistry(),
    )
    assert DeliveryClient(app).get("/healthz").get_json()["signing"] == "keys"


@settings(max_examples=80)
@given(
    key=placeholder_keys,
    name=st.sampled_from(["QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY"]),
)
def test_placeholder_keys_refuse_to_start(key: str, name: str) -> None:
    """sig_..., sig_xxx, <key>, YOUR_SIGNING_KEY and the like stop start-up, naming the variable."""
    with pytest.raises(ConfigurationError, match=f"{name}.*placeholder|{name}.*not set"):
        create_app({**KEYS, name: key}, registry=JobRegistry())


@pytest.mark.parametrize(
    "key",
    [
        "sig_...",
        "sig_xxx",
        "changeme",
        "YOUR_CURRENT_SIGNING_KEY",
        "<signing key>",
        "sig_abc123...",
    ],
)
def test_readme_and_sdk_placeholders_are_refused(key: str) -> None:
    """The placeholders found in READMEs and the SDKs' examples are refused by name."""
    with pytest.raises(ConfigurationError, match="QSTASH_CURRENT_SIGNING_KEY.*placeholder"):
        create_app({**KEYS, "QSTASH_CURRENT_SIGNING_KEY": key}, registry=JobRegistry())


@pytest.mark.parametrize(
    "key", ["sig_abc def0123456789", "sig_abc\tdef", "sig_abc\x00def", "sig_a\u200bb"]
)
def test_keys_with_whitespace_or_control_characters_are_refused(key: str) -> None:
    """A key with a space, tab, NUL or invisible character inside is a paste error."""
    with pytest.raises(ConfigurationError, match="QSTASH_NEXT_SIGNING_KEY contains whitespace"):
        create_app({**KEYS, "QSTASH_NEXT_SIGNING_KEY": key}, registry=JobRegistry())


def test_non_string_key_is_refused() -> None:
    """A key given as a number (FLASK_ or test config) is refused, not stringified."""
    with pytest.raises(ConfigurationError, match="QSTASH_CURRENT_SIGNING_KEY must be a string"):
        create_app({**KEYS, "QSTASH_CURRENT_SIGNING_KEY": 12345}, registry=JobRegistry())


def test_placeholder_token_is_refused() -> None:
    """QSTASH_TOKEN=... (the deployment example) is refused at start-up, not at publish."""
    with pytest.raises(ConfigurationError, match="QSTASH_TOKEN.*placeholder"):
        create_app({**KEYS, "QSTASH_TOKEN": "..."}, registry=JobRegistry())


def test_public_dev_keys_need_dev_mode() -> None:
    """Upstash's public dev keys outside QSTASH_DEV=1 would let anyone forge a delivery."""
    dev_keys = {
        name: config.DEV_IDENTITY[name]
        for name in ("QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY")
    }
    with pytest.raises(ConfigurationError, match="PUBLIC development key"):
        create_app({**KEYS, **dev_keys}, registry=JobRegistry())
    app = create_app({**KEYS, **dev_keys, "QSTASH_DEV": True}, registry=JobRegistry())
    assert DeliveryClient(app).get("/healthz").get_json()["signing"] == "dev-keys"


# --- commands that serve no delivery -----------------------------------------------------


def test_an_app_that_serves_nothing_needs_no_keys(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """serving=False starts without keys or APP_URL, reports signing "none", warns nothing."""
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    with caplog.at_level(logging.WARNING):
        app = create_app({"TESTING": True}, registry=JobRegistry(), serving=False)
        create_app({"QSTASH_DEV": True}, registry=JobRegistry(), serving=False)
    assert DeliveryClient(app).get("/healthz").get_json()["signing"] == "none"
    assert caplog.text == ""


def test_an_app_that_serves_nothing_still_refuses_bad_values() -> None:
    """Without serving, a placeholder key or a malformed APP_URL is still an error."""
    with pytest.raises(ConfigurationError, match="placeholder"):
        create_app({"QSTASH_CURRENT_SIGNING_KEY": "sig_..."}, registry=JobRegistry(), serving=False)
    with pytest.raises(ConfigurationError, match="APP_URL"):
        create_app({"APP_URL": "jobs.example.com"}, registry=JobRegistry(), serving=False)


def test_an_app_that_serves_nothing_still_refuses_every_delivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loaded without keys, the app answers a delivery 401: the receiver fails closed."""
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    registry = JobRegistry()
    ran: list[object] = []
    registry.job("noop")(lambda payload, delivery: ran.append(payload) or {})
    app = create_app(
        {"TESTING": True, "APP_URL": KEYS["APP_URL"]}, registry=registry, serving=False
    )
    url = f"{KEYS['APP_URL']}/api/jobs/noop"
    token = sign(b"{}", url=url, key="sig_anything_0123456789abcdefghijk")
    response = app.test_client().post(
        "/api/jobs/noop", data=b"{}", headers={"Upstash-Signature": token}
    )
    assert response.status_code == 401 and ran == []


def _serving_under(command: str, *args: str) -> bool:
    seen: list[bool] = []
    group = FlaskGroup(create_app=lambda: Flask("t"), add_default_commands=False)
    group._loaded_plugin_commands = True  # the probe, not the installed `flask dev`

    @group.command(command)
    @click.argument("rest", nargs=-1)
    def probe(rest: tuple[str, ...]) -> None:
        seen.append(serves_deliveries())

    result = CliRunner().invoke(group, [command, *args])
    assert result.exit_code == 0, result.output
    return seen[0]


@pytest.mark.parametrize(("command", "serving"), [("run", True), ("dev", True), ("list", False),
                                                  ("shell", False), ("routes", False)])  # fmt: skip
def test_only_the_serving_flask_commands_need_keys(command: str, serving: bool) -> None:
    """Under the flask CLI only run and dev serve deliveries; anything else loads without keys."""
    assert _serving_under(command) is serving


def test_outside_the_flask_cli_the_app_serves() -> None:
    """gunicorn, any WSGI server or a test: no flask command runs, so keys are required."""
    assert serves_deliveries() is True
    with click.Context(click.Command("list")):  # a click program that is not flask
        assert serves_deliveries() is True
