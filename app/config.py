"""Configuration: defaults, then the environment, then ``FLASK_*`` variables, then test config.

The QStash settings use the variable names of Upstash's own SDKs (``QSTASH_TOKEN``,
``QSTASH_URL``, ``QSTASH_CURRENT_SIGNING_KEY``, ``QSTASH_NEXT_SIGNING_KEY``), so an
existing ``.env`` works unchanged. ``check()`` enforces *fail closed*: a server that could
not verify deliveries refuses to start.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from app.errors import ConfigurationError

if TYPE_CHECKING:
    from flask import Flask

#: Upstash's public development identity (QSTASH_PROTOCOL.md §6). Anyone can sign with
#: these keys: they are only ever used when QSTASH_DEV=1 asks for them.
DEV_IDENTITY: dict[str, str] = {
    "QSTASH_URL": "http://127.0.0.1:8080",
    "QSTASH_TOKEN": "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0=",
    "QSTASH_CURRENT_SIGNING_KEY": "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r",
    "QSTASH_NEXT_SIGNING_KEY": "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs",
}
DEV_APP_URL = "http://127.0.0.1:5000"

DEFAULTS: dict[str, Any] = {
    "QSTASH_URL": "https://qstash.upstash.io",
    "QSTASH_TOKEN": None,
    "QSTASH_CURRENT_SIGNING_KEY": None,
    "QSTASH_NEXT_SIGNING_KEY": None,
    # Public base URL QStash calls (scheme://host[:port][/prefix]); the signature's `sub`
    # is checked against APP_URL + the request path, never against the Host header.
    "APP_URL": None,
    "QSTASH_CLOCK_TOLERANCE": 5,
    "QSTASH_MAX_BODY_SIZE": 1024 * 1024,
    "QSTASH_DEV": False,
    "QSTASH_ALLOW_UNSIGNED": False,
    # Packages whose modules declare jobs; each module is imported at start-up.
    "JOBS_PACKAGES": ["jobs"],
    # Schedule ids of @cron jobs are this prefix + the job name; `flask qstash schedules
    # sync` manages (and deletes) only schedules carrying it. Use one per app/environment.
    "QSTASH_SCHEDULE_PREFIX": "qstash-jobs-",
    # send-email: Resend when RESEND_API_KEY is set, else .eml files in EMAIL_OUTBOX
    # (default: <instance>/outbox). RESEND_API_URL is the SDK's own override (tests, staging).
    "RESEND_API_KEY": None,
    "RESEND_API_URL": None,
    "EMAIL_FROM": "onboarding@resend.dev",
    "EMAIL_APP_NAME": "QStash Jobs",  # the product name templates greet with
    "EMAIL_OUTBOX": None,
    # process-image: a local folder (default: <instance>/storage) unless STORAGE_URL is
    # s3://bucket/prefix (needs the `s3` extra); S3_ENDPOINT_URL for S3-compatible servers.
    "STORAGE_ROOT": None,
    "STORAGE_URL": None,
    "S3_ENDPOINT_URL": None,
    # Decompression-bomb guard: pixels actually decoded (after JPEG draft) and input bytes.
    "IMAGE_MAX_PIXELS": 50_000_000,
    "IMAGE_MAX_BYTES": 50 * 1024 * 1024,
    # deliver-webhook: CIDRs opened on purpose despite the private-address block, the
    # timeouts (keep them below the delivery's Upstash-Timeout) and the response-read cap.
    "WEBHOOK_ALLOWED_NETWORKS": [],
    "WEBHOOK_CONNECT_TIMEOUT": 5.0,
    "WEBHOOK_TIMEOUT": 15.0,
    "WEBHOOK_MAX_RESPONSE_BYTES": 64 * 1024,
    # Operations (README: "Operations"). DATABASE_URL None: SQLite in the instance folder.
    "DATABASE_URL": None,
    # None: on, except under TESTING without an explicit DATABASE_URL.
    "DELIVERY_LOG": None,
    "DUPLICATE_GUARD": True,
    # A claim older than this is presumed crashed and taken over; keep it above the
    # longest handler run (gunicorn's timeout kills a worker at 120 s by default).
    "DUPLICATE_LEASE_SECONDS": 150,
    "DELIVERY_LOG_RETENTION_DAYS": 30,
    # Completed claims must outlive QStash's retry window, or a late redelivery reruns.
    "CLAIM_RETENTION_DAYS": 14,
    # Who gets the daily-digest and weekly-report emails (jobs/cron.py); none: not sent.
    "ADMIN_EMAILS": [],
    # Workflows (app.workflows): how long one delivery keeps running steps before it hands
    # the run to a new delivery (0: one step per delivery), the bounds of one run, the
    # longest delay one QStash message may carry (longer sleeps are chained), how long a
    # notified event waits for a run to reach it, and how long finished runs are kept.
    "WORKFLOW_STEP_BUDGET": 2.0,
    "WORKFLOW_MAX_STEPS": 10_000,
    "WORKFLOW_MAX_RESULT_BYTES": 1024 * 1024,
    "WORKFLOW_MAX_DELAY": 7 * 24 * 3600,
    "WORKFLOW_EVENT_RETENTION_DAYS": 7,
    "WORKFLOW_RETENTION_DAYS": 30,
    # A bearer token for POST /api/workflows/events/<id> (notify without QStash); None: off.
    "WORKFLOW_NOTIFY_TOKEN": None,
    "DASHBOARD_TOKEN": None,
    "METRICS": True,
    "METRICS_TOKEN": None,
    "LOG_FORMAT": "text",
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be 1/0, true/false, yes/no or on/off, not {raw!r}")


def _number(kind: Callable[[str], Any]) -> Callable[[str, str], Any]:
    def parse(name: str, raw: str) -> Any:
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigurationError(f"{name} must be a number, not {raw!r}") from None
        if value < 0:
            raise ConfigurationError(f"{name} must not be negative, got {raw!r}")
        return value

    return parse


def _text(name: str, raw: str) -> str | None:
    return raw.strip() or None


def _packages(name: str, raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


#: Plain (unprefixed) environment variables and how to parse them.
ENVIRONMENT: dict[str, Callable[[str, str], Any]] = {
    "QSTASH_URL": _text,
    "QSTASH_TOKEN": _text,
    "QSTASH_CURRENT_SIGNING_KEY": _text,
    "QSTASH_NEXT_SIGNING_KEY": _text,
    "APP_URL": _text,
    "QSTASH_CLOCK_TOLERANCE": _number(float),
    "QSTASH_MAX_BODY_SIZE": _number(int),
    "QSTASH_DEV": _flag,
    "QSTASH_ALLOW_UNSIGNED": _flag,
    "JOBS_PACKAGES": _packages,
    "QSTASH_SCHEDULE_PREFIX": _text,
    "RESEND_API_KEY": _text,
    "RESEND_API_URL": _text,
    "EMAIL_FROM": _text,
    "EMAIL_APP_NAME": _text,
    "EMAIL_OUTBOX": _text,
    "STORAGE_ROOT": _text,
    "STORAGE_URL": _text,
    "S3_ENDPOINT_URL": _text,
    "IMAGE_MAX_PIXELS": _number(int),
    "IMAGE_MAX_BYTES": _number(int),
    "WEBHOOK_ALLOWED_NETWORKS": _packages,
    "WEBHOOK_CONNECT_TIMEOUT": _number(float),
    "WEBHOOK_TIMEOUT": _number(float),
    "WEBHOOK_MAX_RESPONSE_BYTES": _number(int),
    "DATABASE_URL": _text,
    "DELIVERY_LOG": _flag,
    "DUPLICATE_GUARD": _flag,
    "DUPLICATE_LEASE_SECONDS": _number(float),
    "DELIVERY_LOG_RETENTION_DAYS": _number(float),
    "CLAIM_RETENTION_DAYS": _number(float),
    "ADMIN_EMAILS": _packages,
    "WORKFLOW_STEP_BUDGET": _number(float),
    "WORKFLOW_MAX_STEPS": _number(int),
    "WORKFLOW_MAX_RESULT_BYTES": _number(int),
    "WORKFLOW_MAX_DELAY": _number(int),
    "WORKFLOW_EVENT_RETENTION_DAYS": _number(float),
    "WORKFLOW_RETENTION_DAYS": _number(float),
    "WORKFLOW_NOTIFY_TOKEN": _text,
    "DASHBOARD_TOKEN": _text,
    "SECRET_KEY": _text,
    "METRICS": _flag,
    "METRICS_TOKEN": _text,
    "LOG_FORMAT": _text,
}


def load(
    app: Flask,
    test_config: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Fill ``app.config``: defaults, environment, ``FLASK_*`` variables, ``test_config``."""
    env = os.environ if environ is None else environ
    app.config.from_mapping(DEFAULTS)
    for name, parse in ENVIRONMENT.items():
        if name in env:
            app.config[name] = parse(name, env[name])
    app.config.from_prefixed_env()
    if test_config is not None:
        app.config.from_mapping(test_config)
    if app.config["QSTASH_DEV"]:
        _apply_dev_identity(app)


def _apply_dev_identity(app: Flask) -> None:
    # Only what the user left unset: QSTASH_URL=http://127.0.0.1:9000 still wins.
    for name, value in DEV_IDENTITY.items():
        if app.config.get(name) in (None, "", DEFAULTS[name]):
            app.config[name] = value
    if not app.config.get("APP_URL"):
        app.config["APP_URL"] = DEV_APP_URL


def signing_mode(config: Mapping[str, Any]) -> str:
    """Say how deliveries are authenticated: ``keys``, ``dev-keys``, ``unsigned`` or ``none``."""
    if config.get("QSTASH_DEV") and (
        config.get("QSTASH_CURRENT_SIGNING_KEY") == DEV_IDENTITY["QSTASH_CURRENT_SIGNING_KEY"]
    ):
        return "dev-keys"
    if not config.get("QSTASH_CURRENT_SIGNING_KEY"):
        # An app loaded by a CLI command that serves nothing has no keys: nothing verifies.
        return "unsigned" if unsigned_allowed(config) else "none"
    return "keys"


def unsigned_allowed(config: Mapping[str, Any]) -> bool:
    """Accept unsigned calls only with both FLASK_DEBUG=1 and QSTASH_ALLOW_UNSIGNED=1."""
    return bool(config.get("DEBUG")) and bool(config.get("QSTASH_ALLOW_UNSIGNED"))


def check(app: Flask, *, serving: bool = True) -> None:
    """Refuse a configuration under which deliveries could not be verified; warn on dev modes.

    ``serving=False`` (a CLI command that answers no delivery, e.g. ``flask jobs list``)
    lets the signing keys and ``APP_URL`` be missing; values that are set are still checked.
    """
    config = app.config
    if config.get("QSTASH_ALLOW_UNSIGNED") and not config.get("DEBUG"):
        raise ConfigurationError(
            "QSTASH_ALLOW_UNSIGNED=1 is only honoured together with FLASK_DEBUG=1;"
            " never accept unsigned deliveries in production"
        )
    missing = [
        name
        for name in ("QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY", "APP_URL")
        if not config.get(name)
    ]
    if unsigned_allowed(config):
        missing = [name for name in missing if name == "APP_URL"]
    if missing and serving:
        raise ConfigurationError(
            f"{', '.join(missing)} not set: refusing to start a server that cannot verify"
            " QStash deliveries (set them from the Upstash console, or QSTASH_DEV=1 for"
            " the local dev server)"
        )
    for name in ("QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY", "QSTASH_TOKEN"):
        if config.get(name):
            _check_secret(name, config[name], dev=bool(config.get("QSTASH_DEV")))
    if config.get("APP_URL"):
        _check_app_url(config["APP_URL"])
    _check_tolerance(config["QSTASH_CLOCK_TOLERANCE"])
    if serving and signing_mode(config) == "dev-keys":
        app.logger.warning(
            "QSTASH_DEV=1: using Upstash's PUBLIC development signing keys; anyone can forge"
            " deliveries to this app. Never use this mode on a reachable server."
        )
    if serving and unsigned_allowed(config):
        app.logger.warning(
            "QSTASH_ALLOW_UNSIGNED=1: deliveries WITHOUT a signature are accepted (debug"
            " only); requests that carry a signature are still verified."
        )


def _check_tolerance(tolerance: Any) -> None:
    # NaN or infinity would make every token valid forever (no comparison with NaN is true).
    number = isinstance(tolerance, int | float) and not isinstance(tolerance, bool)
    if not (number and 0 <= tolerance < math.inf):
        raise ConfigurationError(
            f"QSTASH_CLOCK_TOLERANCE must be a finite number of seconds >= 0, not {tolerance!r}"
        )


#: What people paste from docs and templates instead of a key (compared case-insensitively,
#: after an optional ``sig_``): ``sig_...``, ``sig_xxx``, ``changeme``, ``YOUR_SIGNING_KEY``.
_PLACEHOLDER = re.compile(
    r"[.x*#?_-]*"
    r"|.*(\.\.|\u2026|<|>|\$\{|\{\{).*"
    r"|change[_-]?me|placeholder|todo|fixme|tbd|secret|token|none|null|undefined"
    r"|(your|my)?[_-]?(qstash)?[_-]?(current|next)?[_-]?(signing)?[_-]?(key|token)",
    re.IGNORECASE | re.DOTALL,
)


def _check_secret(name: str, value: Any, *, dev: bool) -> None:
    # QStash's keys are opaque HMAC secrets (the SDKs check no format; the console issues
    # sig_ + base58): refuse only what is certainly not one, and say which variable it is.
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, not {type(value).__name__}")
    body = value[4:] if value.lower().startswith("sig_") else value
    if _PLACEHOLDER.fullmatch(body):
        raise ConfigurationError(
            f"{name} is a placeholder (like sig_... or changeme), not a real value: copy it"
            " from the Upstash console (QStash → Signing keys / REST token), or set"
            " QSTASH_DEV=1 for the local dev server"
        )
    if any(char.isspace() or not char.isprintable() for char in value):
        raise ConfigurationError(
            f"{name} contains whitespace or control characters: paste the value alone"
        )
    if not dev and name != "QSTASH_TOKEN" and value in DEV_IDENTITY.values():
        raise ConfigurationError(
            f"{name} is Upstash's PUBLIC development key, which anyone can sign with: set"
            " QSTASH_DEV=1 to use it on purpose (local dev server only), or your own keys"
        )


def _check_app_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"APP_URL must be an absolute http(s) URL, not {url!r}")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"APP_URL must not carry a query or fragment: {url!r}")
