"""send-email throughput over HTTPS: the pooled Resend client against the SDK's default.

Both sides send the same emails through the send-email endpoint (in-process, signed
deliveries made before the clock starts) with the real ``resend`` SDK, to the same
local HTTPS fake Resend in its own process, whose certificate comes from a throwaway CA
(trustme). Both clients trust one bundle, certifi's roots plus that CA, as production
clients trust certifi's. The only difference is ``resend.default_http_client``:

* ``pooled``: ``app.mail.PooledHTTPClient`` (one httpx pool per process, keep-alive).
* ``default``: the SDK's ``RequestsClient`` (``requests.request`` per call: a new
  connection and TLS handshake for every email).

Each pass runs both sides back to back; the ratio pooled/default of emails per second is
reported as the median of the per-pass ratios with their min–max. ``--smoke``: one pass
of a few emails (CI: the same code path in seconds).

Run: ``.venv/bin/python bench/send_email.py [--emails N] [--passes N] [--smoke]`` (not
email.py: it would shadow the standard library's ``email`` package when run as a script).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import certifi
import resend
import trustme

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import create_app  # noqa: E402
from app.jobs import URL_PREFIX  # noqa: E402
from app.mail import PooledHTTPClient  # noqa: E402
from app.testing import delivery_headers, encode_payload  # noqa: E402
from bench._receiver import receiver  # noqa: E402
from bench._stats import side_by_side, spread  # noqa: E402

PAYLOAD = {
    "to": "ada@example.com",
    "template": "welcome",
    "data": {"name": "Ada", "loginUrl": "https://app.example.com/login"},
}


class SDKDefaultClient(resend.RequestsClient):
    """The SDK's default client, under a name the app does not replace."""


def send_rate(url: str, emails: int, client: resend.HTTPClient | None) -> float:
    """Return emails per second through send-email with ``client`` (None: the pooled one)."""
    app = create_app(
        {
            "TESTING": True,
            "QSTASH_CURRENT_SIGNING_KEY": "sig_bench_current_0123456789abcdef",
            "QSTASH_NEXT_SIGNING_KEY": "sig_bench_next_0123456789abcdefghi",
            "APP_URL": "https://bench.example.com",
            "RESEND_API_KEY": "re_bench",
            "RESEND_API_URL": url,
        }
    )
    resend.default_http_client = client or resend.RequestsClient()
    test_client = app.test_client()
    path = f"{URL_PREFIX}/send-email"
    body = encode_payload(PAYLOAD)
    prepared = [delivery_headers(app, path, body, message_id=f"m{i}") for i in range(emails + 1)]
    test_client.post(path, data=body, headers=prepared.pop())  # warm up
    started = time.perf_counter()
    for headers in prepared:
        response = test_client.post(path, data=body, headers=headers)
        assert response.status_code == 200, response.get_json()
    rate = emails / (time.perf_counter() - started)
    if isinstance(resend.default_http_client, PooledHTTPClient):
        resend.default_http_client.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=300)
    parser.add_argument("--default-emails", type=int, default=60)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="one pass of a few emails (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.emails, args.default_emails, args.passes = 5, 3, 1
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    with tempfile.TemporaryDirectory() as folder:
        bundle, chain, key = (Path(folder) / name for name in ("ca.pem", "chain.pem", "key.pem"))
        bundle.write_bytes(Path(certifi.where()).read_bytes() + ca.cert_pem.bytes())
        chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        key.write_bytes(cert.private_key_pem.bytes())
        os.environ["SSL_CERT_FILE"] = str(bundle)  # httpx
        os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)  # requests
        with receiver(str(chain), str(key)) as url:
            passes = side_by_side(  # in turn: the machine's load drifts
                args.passes,
                lambda: send_rate(url, args.emails, None),
                lambda: send_rate(url, args.default_emails, SDKDefaultClient()),
            )
    pooled, default = [p for p, _ in passes], [d for _, d in passes]
    ratios = [p / d for p, d in passes]
    print(f"HTTPS fake Resend; {args.passes} passes; each side's median pass")
    print(
        f"SDK default client  {statistics.median(default):8.0f} emails/s"
        f" ({args.default_emails} per pass)"
    )
    print(f"pooled httpx client {statistics.median(pooled):8.0f} emails/s ({args.emails} per pass)")
    print(f"ratio pooled/default {spread(ratios)}")


if __name__ == "__main__":
    main()
