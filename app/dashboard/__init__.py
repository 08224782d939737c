"""The operations dashboard at ``/dashboard``, mounted only when ``DASHBOARD_TOKEN`` is set.

Server-rendered with Jinja2 and inline SVG; no JavaScript, nothing loaded from elsewhere.
``auth`` decides who may look, ``views`` gathers what is shown, ``chart`` lays out the
chart, ``runs`` shows workflow runs and a run's timeline, ``actions`` starts, cancels and
resumes runs (POST forms). Without ``SECRET_KEY`` the
session key is derived from ``DASHBOARD_TOKEN``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from flask import Blueprint, current_app
from werkzeug.wrappers import Response as BaseResponse

from app.dashboard import actions, auth, runs, views
from app.errors import ConfigurationError

if TYPE_CHECKING:
    from flask import Flask

MIN_TOKEN_LENGTH = 16
#: No script, no third-party anything, no framing.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)


def _secure_headers(response: BaseResponse) -> BaseResponse:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    # same-origin, not no-referrer: with no-referrer browsers post forms with Origin: null.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def create_blueprint() -> Blueprint:
    """Return the dashboard blueprint: login, logout, the deliveries page, workflow runs
    and their actions."""
    bp = Blueprint(
        "dashboard",
        __name__,
        url_prefix="/dashboard",
        template_folder="templates",
        static_folder="static",
    )
    bp.add_url_rule("/", "index", auth.login_required(views.index), methods=["GET"])
    bp.add_url_rule("/runs", "runs", auth.login_required(runs.runs), methods=["GET"])
    bp.add_url_rule("/runs/<run_id>", "run", auth.login_required(runs.run), methods=["GET"])
    for path, name, view in (
        ("/runs/start", "start_run", actions.start),
        ("/runs/<run_id>/cancel", "cancel_run", actions.cancel_run),
        ("/runs/<run_id>/resume", "resume_run", actions.resume_run),
    ):
        bp.add_url_rule(path, name, auth.login_required(view), methods=["POST"])
    bp.add_url_rule("/login", "login", auth.login, methods=["GET", "POST"])
    bp.add_url_rule("/logout", "logout", auth.logout, methods=["POST"])
    bp.after_request(_secure_headers)
    bp.add_app_template_filter(views.when, "when")
    bp.context_processor(lambda: {"csrf_token": auth.csrf_token, "has_workflows": _has_workflows})
    return bp


def _has_workflows() -> bool:
    return bool(runs.declared(current_app.extensions["qstash_jobs"]))


def _secret_key(app: Flask, token: str) -> None:
    if app.config.get("SECRET_KEY"):
        return
    # Derived, not random: every worker and host agrees on it without coordination, and
    # whoever could forge it already holds the token the session stands for.
    app.config["SECRET_KEY"] = hmac.new(
        token.encode(), b"qstash-jobs dashboard session key", hashlib.sha256
    ).hexdigest()


def init_app(app: Flask) -> None:
    """Mount the dashboard when ``DASHBOARD_TOKEN`` is set; refuse a guessable token."""
    token = app.config.get("DASHBOARD_TOKEN")
    if not token:
        return
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"DASHBOARD_TOKEN must be at least {MIN_TOKEN_LENGTH} characters"
            " (try: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    _secret_key(app, token)
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.register_blueprint(create_blueprint())
