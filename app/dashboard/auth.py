"""Who may see the dashboard: ``Authorization: Bearer <DASHBOARD_TOKEN>`` or a session.

The login form posts the token once and gets a signed session cookie (HttpOnly,
SameSite=Lax, 12 hours). Tokens are compared in constant time; the form carries a CSRF
token tied to the session and a cross-site ``Origin`` is refused. The session stores a
fingerprint of the token, so changing ``DASHBOARD_TOKEN`` logs everybody out.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import current_app, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from app.receiver import bearer_token

SESSION_SECONDS = 12 * 3600
_KEY = "dashboard"
_CSRF = "dashboard_csrf"

F = TypeVar("F", bound=Callable[..., Any])


def _token() -> str:
    token: str = current_app.config["DASHBOARD_TOKEN"]
    return token


def matches(given: str) -> bool:
    """Say whether ``given`` is the dashboard token, in constant time."""
    return hmac.compare_digest(given.encode(), _token().encode())


def fingerprint() -> str:
    """Return a digest of the current token that is safe to keep in a cookie."""
    return hashlib.sha256(b"qstash-jobs dashboard\0" + _token().encode()).hexdigest()[:32]


def bearer_ok() -> bool:
    """Say whether the request carries the token as a bearer token."""
    given = bearer_token(request)
    return given is not None and matches(given)


def session_ok() -> bool:
    """Say whether the session cookie is a live login made with the current token."""
    entry = session.get(_KEY)
    if not isinstance(entry, dict):
        return False
    fresh = time.time() - float(entry.get("at", 0)) < SESSION_SECONDS
    return fresh and hmac.compare_digest(str(entry.get("token", "")), fingerprint())


def login_required(view: F) -> F:
    """Send visitors without a bearer token or a session to the login form."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if bearer_ok() or session_ok():
            return view(*args, **kwargs)
        if request.headers.get("Authorization"):
            return _page("dashboard/login.html", 401, error="That token is not valid.")
        return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))

    return wrapped  # type: ignore[return-value]


def csrf_token() -> str:
    """Return this session's CSRF token, creating it on first use."""
    if _CSRF not in session:
        session[_CSRF] = secrets.token_urlsafe(32)
    token: str = session[_CSRF]
    return token


def _csrf_ok() -> bool:
    expected = session.get(_CSRF)
    given = request.form.get("csrf_token", "")
    return isinstance(expected, str) and hmac.compare_digest(given.encode(), expected.encode())


def _same_origin() -> bool:
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.host


def form_ok() -> bool:
    """Say whether a form post may act: from this origin, with the session's CSRF token,
    or with the bearer token (no other site can make a browser send it, and no cookie
    rides along with it)."""
    return _same_origin() and (bearer_ok() or _csrf_ok())


def _page(template: str, status: int, **context: Any) -> BaseResponse:
    response = current_app.make_response((render_template(template, **context), status))
    return response


def _safe_next(target: str | None) -> str:
    # Only a path on this dashboard: never an open redirect to another site.
    if target and target.startswith("/dashboard") and not target.startswith("//"):
        return target
    return url_for("dashboard.index")


def login() -> BaseResponse:
    """Show the login form (GET) or check the token and start a session (POST)."""
    if request.method == "GET":
        return _page("dashboard/login.html", 200, next=request.args.get("next", ""))
    if not _same_origin() or not _csrf_ok():
        return _page("dashboard/login.html", 403, error="The form expired; please try again.")
    if not matches(request.form.get("token", "")):
        return _page("dashboard/login.html", 401, error="That token is not valid.")
    session.clear()  # a fresh session: no fixation of a planted cookie
    session[_KEY] = {"token": fingerprint(), "at": time.time()}
    return redirect(_safe_next(request.form.get("next")))


def logout() -> BaseResponse:
    """End the session (POST with the CSRF token)."""
    if _same_origin() and _csrf_ok():
        session.clear()
    return redirect(url_for("dashboard.login"))
