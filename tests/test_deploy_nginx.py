"""deploy/nginx.conf for real: nginx in front of gunicorn, slow clients held off the workers.

The shipped file is used as it is, with only its addresses and certificate paths pointed at
this test's (each substitution must match exactly once, so an edit of the file that drops
one fails here). nginx comes from PATH (``.ci/run`` installs Debian's); without it the tests
are skipped. Everything listens on 127.0.0.1; nginx runs from a temporary prefix.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme

from app.qstash.signature import sign
from tests.conftest import CURRENT_KEY, NEXT_KEY
from tests.servers import ROOT, Server, free_port, gunicorn, stop

pytestmark = pytest.mark.e2e

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/sbin")
SITE = ROOT / "deploy" / "nginx.conf"
APP_URL = "https://jobs.example.com"
#: The app's default QSTASH_MAX_BODY_SIZE, which nginx's client_max_body_size must match.
LIMIT = 1024 * 1024
WORKERS = 2
#: Slow clients of each kind: more than there are workers.
SLOW = WORKERS + 4
ENV = {
    "QSTASH_CURRENT_SIGNING_KEY": CURRENT_KEY,
    "QSTASH_NEXT_SIGNING_KEY": NEXT_KEY,
    "APP_URL": APP_URL,
    "JOBS_PACKAGES": "tests.e2e_jobs",
}


@dataclass
class Proxy:
    """nginx running the shipped site config in front of ``app``."""

    url: str
    plain_url: str
    port: int
    tls: ssl.SSLContext
    app: Server

    def client(self) -> httpx.Client:
        """Return a client for nginx that trusts the test CA."""
        return httpx.Client(base_url=self.url, verify=self.tls, timeout=10)


def render_site(gunicorn_port: int, tls_port: int, http_port: int, cert: Path, key: Path) -> str:
    """Return deploy/nginx.conf with this test's addresses and certificate."""
    text = SITE.read_text()
    for old, new in [
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{gunicorn_port};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;"),
        ("listen [::]:443 ssl;", ""),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen [::]:80;", ""),
        ("/etc/letsencrypt/live/jobs.example.com/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/jobs.example.com/privkey.pem", str(key)),
    ]:
        assert text.count(old) == 1, f"deploy/nginx.conf no longer has {old!r} once"
        text = text.replace(old, new)
    return text


def main_config(prefix: Path, site: Path) -> str:
    """Return an nginx.conf that keeps every file nginx writes under ``prefix``."""
    # As root, nginx's workers would switch to "nobody", who cannot read a 0700 tmp dir.
    user = "user root root;" if os.geteuid() == 0 else ""
    temp = " ".join(
        f"{kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
        daemon off;
        {user}
        worker_processes 1;
        pid {prefix / "nginx.pid"};
        error_log {prefix / "error.log"} warn;
        events {{ worker_connections 256; }}
        http {{
            access_log {prefix / "access.log"};
            {temp}
            include {site};
        }}
    """


@contextmanager
def nginx(prefix: Path, app: Server) -> Iterator[Proxy]:
    """Run nginx with the shipped site in front of ``app``; stop it after."""
    assert NGINX is not None
    ca = trustme.CA()
    issued = ca.issue_cert("jobs.example.com", "127.0.0.1")
    cert, key = prefix / "cert.pem", prefix / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    tls = ssl.create_default_context()
    ca.configure_trust(tls)
    tls_port, http_port = free_port(), free_port()
    gunicorn_port = int(app.url.rsplit(":", 1)[1])
    site = prefix / "site.conf"
    site.write_text(render_site(gunicorn_port, tls_port, http_port, cert, key))
    conf = prefix / "nginx.conf"
    conf.write_text(main_config(prefix, site))
    log = prefix / "nginx.out"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    proxy = Proxy(
        f"https://127.0.0.1:{tls_port}", f"http://127.0.0.1:{http_port}", tls_port, tls, app
    )
    try:
        wait_for_tls(proxy, process, prefix)
        yield proxy
    finally:
        stop(process)


def wait_for_tls(proxy: Proxy, process: subprocess.Popen[bytes], prefix: Path) -> None:
    """Wait until nginx answers /healthz over TLS; fail with its error log if it does not."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            httpx.get(f"{proxy.url}/healthz", verify=proxy.tls, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    logs = [p.read_text() for p in (prefix / "nginx.out", prefix / "error.log") if p.exists()]
    raise RuntimeError("nginx did not come up:\n" + "".join(logs))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with gunicorn(tmp_path_factory.mktemp("gunicorn"), ENV, workers=WORKERS) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(app: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    if NGINX is None:
        pytest.skip("nginx is not on PATH (Debian: apt-get install nginx; .ci/run does)")
    with nginx(tmp_path_factory.mktemp("nginx"), app) as running:
        yield running


def signed(body: bytes, path: str = "/api/jobs/echo", url: str | None = None) -> dict[str, str]:
    """Return QStash's headers for ``body``, signed for ``url`` (default APP_URL + path)."""
    token = sign(body, url=url or f"{APP_URL}{path}", key=CURRENT_KEY)
    return {"Upstash-Signature": token, "Upstash-Message-Id": f"msg_{uuid.uuid4().hex}"}


def open_slow_clients(port: int, tls: ssl.SSLContext | None) -> list[socket.socket]:
    """Open SLOW clients that send headers and part of a body, and SLOW that send half
    their headers; each then waits, as a slowloris does."""
    partial_body = (
        b"POST /api/jobs/echo HTTP/1.1\r\nHost: jobs.example.com\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        b'{"webhookId": "'
    )
    partial_headers = b"POST /api/jobs/echo HTTP/1.1\r\nHost: jobs.example.com\r\nUpstash-Sig"
    clients = []
    for start in [partial_body] * SLOW + [partial_headers] * SLOW:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
        sock.sendall(start)
        clients.append(sock)
    return clients


@contextmanager
def slow_clients(port: int, tls: ssl.SSLContext | None = None) -> Iterator[None]:
    """Hold the slow clients of ``open_slow_clients`` open for the block."""
    with ExitStack() as stack:
        for sock in open_slow_clients(port, tls):
            stack.callback(sock.close)
        time.sleep(0.3)  # let every one of them reach a worker, where one is free
        yield


def timed_healthz(base: str, verify: ssl.SSLContext | bool, timeout: float) -> float:
    """Return how long ``GET /healthz`` took to answer 200."""
    started = time.monotonic()
    response = httpx.get(f"{base}/healthz", verify=verify, timeout=timeout)
    assert response.status_code == 200
    return time.monotonic() - started


def test_slow_clients_block_gunicorn_alone(app: Server) -> None:
    """The control: the same slow clients straight at gunicorn leave /healthz unanswered."""
    port = int(app.url.rsplit(":", 1)[1])
    with slow_clients(port), pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{app.url}/healthz", timeout=2)
    # Closed, they free the workers again (the other tests share this gunicorn).
    assert timed_healthz(app.url, False, timeout=10) < 10


def test_healthz_answers_through_nginx_while_slow_clients_hang(proxy: Proxy) -> None:
    """Behind nginx, the slow clients hold nginx connections, never a worker."""
    with slow_clients(proxy.port, proxy.tls):
        for _ in range(3):
            assert timed_healthz(proxy.url, proxy.tls, timeout=5) < 1.0


def test_signed_delivery_through_nginx_while_slow_clients_hang(proxy: Proxy) -> None:
    """A signed delivery through nginx runs the job while the slow clients hang."""
    body = b'{"webhookId": "wh_nginx"}'
    with slow_clients(proxy.port, proxy.tls), proxy.client() as client:
        started = time.monotonic()
        response = client.post("/api/jobs/echo", content=body, headers=signed(body))
        took = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json() == {"webhookId": "wh_nginx", "retried": 0}
    assert took < 1.0


def test_signature_is_checked_against_app_url_not_the_proxied_host(proxy: Proxy) -> None:
    """Through nginx, sub = APP_URL + path: any Host passes, a token for the Host URL fails."""
    body = b'{"webhookId": "wh_host"}'
    with proxy.client() as client:
        forged_host = {**signed(body), "Host": "evil.example.net"}
        assert client.post("/api/jobs/echo", content=body, headers=forged_host).status_code == 200
        for_host = signed(body, url=f"{proxy.url}/api/jobs/echo")
        refused = client.post("/api/jobs/echo", content=body, headers=for_host)
    assert refused.status_code == 401
    assert refused.json()["code"] == "subject_mismatch"


def test_client_scheme_headers_cannot_confuse_gunicorn(proxy: Proxy) -> None:
    """X-Forwarded-Ssl: off next to nginx's X-Forwarded-Proto: https is dropped, not a 400."""
    body = b'{"webhookId": "wh_scheme"}'
    spoofed = {
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Ssl": "off",
        "X-Forwarded-Protocol": "plain",
        "X-Forwarded-Host": "evil.example.net",
    }
    with proxy.client() as client:
        response = client.post("/api/jobs/echo", content=body, headers={**signed(body), **spoofed})
    assert response.status_code == 200, response.text


def test_chunked_delivery_is_buffered_and_verified(proxy: Proxy) -> None:
    """A chunked body reaches gunicorn whole (nginx buffers it) and verifies."""
    body = b'{"webhookId": "' + b"c" * 50_000 + b'"}'

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    with proxy.client() as client:
        response = client.post("/api/jobs/echo", content=chunks(), headers=signed(body))
    assert response.status_code == 200, response.text
    assert response.json()["webhookId"] == "c" * 50_000


def test_body_at_the_limit_reaches_the_job(proxy: Proxy) -> None:
    """client_max_body_size equals QSTASH_MAX_BODY_SIZE: a body of exactly the limit runs."""
    prefix, suffix = b'{"webhookId": "', b'"}'
    body = prefix + b"x" * (LIMIT - len(prefix) - len(suffix)) + suffix
    assert len(body) == LIMIT
    with proxy.client() as client:
        response = client.post("/api/jobs/echo", content=body, headers=signed(body))
    assert response.status_code == 200, response.text[:300]


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_the_limit_is_non_retryable_from_nginx(proxy: Proxy, chunked: bool) -> None:
    """One byte past the limit is nginx's 489 + Upstash-NonRetryable-Error, as the app's."""
    body = b"x" * (LIMIT + 1)
    content: bytes | Iterator[bytes] = iter([body[:LIMIT], body[LIMIT:]]) if chunked else body
    reached_gunicorn = proxy.app.output().count('"POST /api/jobs/echo')
    with proxy.client() as client:
        response = client.post("/api/jobs/echo", content=content, headers=signed(body))
    assert response.status_code == 489
    assert response.headers["Upstash-NonRetryable-Error"] == "true"
    assert response.json()["code"] == "payload_too_large"
    time.sleep(0.2)  # an access line gunicorn wrote would be there by now
    assert proxy.app.output().count('"POST /api/jobs/echo') == reached_gunicorn


def test_plain_http_redirects_to_https(proxy: Proxy) -> None:
    """Port 80 only redirects: no delivery is served in clear text."""
    response = httpx.post(f"{proxy.plain_url}/api/jobs/echo", content=b"{}", timeout=5)
    assert response.status_code == 301
    assert response.headers["Location"].startswith("https://")
