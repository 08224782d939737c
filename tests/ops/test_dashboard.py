"""The dashboard's access control, headers and content, through Flask's test client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.delivery import Delivery
from app.errors import ConfigurationError, NonRetryableError
from app.jobs import JobRegistry
from app.store import get_store
from app.testing import DeliveryClient
from tests.ops.conftest import close_store, ops_config

TOKEN = "a-dashboard-token-of-some-length"


def registry() -> JobRegistry:
    jobs = JobRegistry()

    @jobs.job("hostile")
    def hostile(payload: Any, delivery: Delivery) -> None:
        raise NonRetryableError("<script>alert(1)</script>")

    @jobs.cron("hourly", cron="5 * * * *")
    def hourly(payload: Any, delivery: Delivery) -> None:
        return None

    return jobs


def make_app(tmp_path: Any, **config: Any) -> Flask:
    config = {"DASHBOARD_TOKEN": TOKEN, **config}
    return create_app(ops_config(f"sqlite:///{tmp_path}/d.sqlite3", **config), registry=registry())


@pytest.fixture
def app(tmp_path: Any) -> Iterator[Flask]:
    flask_app = make_app(tmp_path)
    yield flask_app
    close_store(flask_app)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login_form(client: FlaskClient) -> str:
    page = client.get("/dashboard/login").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match
    return match.group(1)


def test_no_token_no_dashboard(tmp_path: Any) -> None:
    """Without DASHBOARD_TOKEN there is no /dashboard at all."""
    app = make_app(tmp_path, DASHBOARD_TOKEN=None)
    assert app.test_client().get("/dashboard/").status_code == 404
    close_store(app)


def test_short_token_is_refused(tmp_path: Any) -> None:
    """A guessable DASHBOARD_TOKEN stops the app from starting."""
    with pytest.raises(ConfigurationError, match="at least 16 characters"):
        make_app(tmp_path, DASHBOARD_TOKEN="short")


def test_bearer_token_opens_the_dashboard(app: Flask) -> None:
    """Authorization: Bearer <token> shows the page; a wrong token gets 401."""
    client = app.test_client()
    assert client.get("/dashboard/", headers=bearer()).status_code == 200
    assert client.get("/dashboard/", headers=bearer(TOKEN + "x")).status_code == 401


def test_anonymous_visitor_is_sent_to_the_login_form(app: Flask) -> None:
    """Without credentials the dashboard redirects to the login form, keeping the target."""
    response = app.test_client().get("/dashboard/?window=7d")
    assert response.status_code == 302
    assert response.headers["Location"] == "/dashboard/login?next=/dashboard/?window%3D7d"


def test_login_sets_a_hardened_session_cookie(app: Flask) -> None:
    """The right token starts an HttpOnly, SameSite=Lax session that opens the dashboard."""
    client = app.test_client()
    csrf = login_form(client)
    response = client.post("/dashboard/login", data={"token": TOKEN, "csrf_token": csrf})
    assert response.status_code == 302
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/dashboard/").status_code == 200


@pytest.mark.parametrize(
    ("form", "headers", "status"),
    [
        ({"token": TOKEN}, {}, 403),  # no CSRF token: a forged cross-site login
        ({"token": TOKEN, "csrf_token": "guess"}, {}, 403),
        ({"token": TOKEN, "csrf_token": None}, {"Origin": "https://evil.example"}, 403),
        ({"token": "wrong-token-wrong-token", "csrf_token": None}, {}, 401),
    ],
)
def test_bad_logins_are_refused(
    app: Flask, form: dict[str, Any], headers: dict[str, str], status: int
) -> None:
    """Missing or wrong CSRF token, a foreign Origin or a wrong token: no session."""
    client = app.test_client()
    csrf = login_form(client)
    data = {k: (csrf if v is None else v) for k, v in form.items()}
    assert client.post("/dashboard/login", data=data, headers=headers).status_code == status
    assert client.get("/dashboard/").status_code == 302


def test_login_never_redirects_off_site(app: Flask) -> None:
    """A ``next`` pointing elsewhere is replaced by the dashboard (no open redirect)."""
    client = app.test_client()
    data = {"token": TOKEN, "csrf_token": login_form(client), "next": "//evil.example/x"}
    assert client.post("/dashboard/login", data=data).headers["Location"] == "/dashboard/"


def test_changing_the_token_ends_existing_sessions(tmp_path: Any) -> None:
    """A session made with the old token is worthless once DASHBOARD_TOKEN changes."""
    old = make_app(tmp_path, SECRET_KEY="fixed-secret-key")
    client = old.test_client()
    client.post("/dashboard/login", data={"token": TOKEN, "csrf_token": login_form(client)})
    cookie = client.get_cookie("session")
    assert cookie is not None
    new = make_app(tmp_path, SECRET_KEY="fixed-secret-key", DASHBOARD_TOKEN=TOKEN + "-rotated")
    other = new.test_client()
    other.set_cookie("session", cookie.value)
    assert other.get("/dashboard/").status_code == 302
    close_store(old)
    close_store(new)


def test_page_forbids_scripts_and_framing(app: Flask) -> None:
    """The page is served with a CSP that allows no script and no framing, and no caching."""
    response = app.test_client().get("/dashboard/", headers=bearer())
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["Cache-Control"] == "no-store"


def test_error_text_from_a_job_is_escaped(app: Flask) -> None:
    """A job's error message is shown as text, never as markup."""
    DeliveryClient(app).deliver("hostile", {}, message_id="msg_xss")
    store = get_store(app)
    assert store is not None and store.flush()
    page = app.test_client().get("/dashboard/", headers=bearer()).get_data(as_text=True)
    assert "msg_xss" in page
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_schedules_list_next_runs(app: Flask) -> None:
    """Each @cron job is listed with its expression and three next runs."""
    page = app.test_client().get("/dashboard/", headers=bearer()).get_data(as_text=True)
    assert "5 * * * *" in page
    assert len(re.findall(r":05:00 UTC", page)) == 3


def test_unknown_window_is_a_clear_400(app: Flask) -> None:
    """?window= other than 1h, 24h or 7d answers 400 naming the choices."""
    response = app.test_client().get("/dashboard/?window=1y", headers=bearer())
    assert response.status_code == 400
    assert b"1h, 24h, 7d" in response.data


def test_dashboard_without_the_log_says_so(tmp_path: Any) -> None:
    """With DELIVERY_LOG=0 the page still shows schedules and says the log is off."""
    app = make_app(tmp_path, DELIVERY_LOG=False, DUPLICATE_GUARD=False)
    page = app.test_client().get("/dashboard/", headers=bearer()).get_data(as_text=True)
    assert "delivery log is off" in page and "5 * * * *" in page
