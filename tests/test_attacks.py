"""The attack matrix: every forged or tampered delivery is refused and the handler never runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.qstash.signature import sign
from app.testing import DeliveryClient
from tests.conftest import APP_URL, CURRENT_KEY, NEXT_KEY, Calls
from tests.tokens import claims_for, forge

PATH = "/api/jobs/noop"
URL = APP_URL + PATH
BODY = b'{"hello":"world","n":1}'
HS256 = {"alg": "HS256", "typ": "JWT"}


@dataclass
class Attack:
    """A request to send: headers and body, plus what the receiver must answer."""

    token: str | None
    body: bytes = BODY
    code: str = "invalid_signature"
    path: str = PATH


def _rs256_token() -> str:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims_for(BODY, URL), private, algorithm="RS256")


ATTACKS: dict[str, Callable[[], Attack]] = {
    "no header": lambda: Attack(None, code="missing_signature"),
    "empty token": lambda: Attack("", code="malformed_signature"),
    "whitespace token": lambda: Attack("   ", code="malformed_signature"),
    "garbage token": lambda: Attack("not.a.jwt", code="malformed_signature"),
    "random base64 token": lambda: Attack("eyJhbGciOi.eyJpc3Mi.c2ln", code="malformed_signature"),
    "one flipped byte of the body": lambda: Attack(
        sign(BODY, url=URL, key=CURRENT_KEY),
        body=BODY.replace(b"1", b"2"),
        code="body_hash_mismatch",
    ),
    "body re-serialised with other whitespace": lambda: Attack(
        sign(BODY, url=URL, key=CURRENT_KEY),
        body=b'{"hello": "world", "n": 1}',
        code="body_hash_mismatch",
    ),
    "body with a trailing newline": lambda: Attack(
        sign(BODY, url=URL, key=CURRENT_KEY), body=BODY + b"\n", code="body_hash_mismatch"
    ),
    "expired beyond tolerance": lambda: Attack(
        sign(BODY, url=URL, key=CURRENT_KEY, now=int(time.time()) - 320),
        code="signature_expired",
    ),
    "nbf in the future": lambda: Attack(
        sign(BODY, url=URL, key=CURRENT_KEY, not_before=int(time.time()) + 60),
        code="signature_not_yet_valid",
    ),
    "iat in the future": lambda: Attack(
        sign(BODY, url=URL, key=CURRENT_KEY, now=int(time.time()) + 60),
        code="signature_not_yet_valid",
    ),
    "wrong iss": lambda: Attack(
        forge(HS256, claims_for(BODY, URL, iss="Upstash2"), CURRENT_KEY), code="wrong_issuer"
    ),
    "sub with another scheme": lambda: Attack(
        sign(BODY, url=URL.replace("https:", "http:"), key=CURRENT_KEY), code="subject_mismatch"
    ),
    "sub with another host": lambda: Attack(
        sign(BODY, url=URL.replace("jobs.example", "evil.example"), key=CURRENT_KEY),
        code="subject_mismatch",
    ),
    "sub with a port": lambda: Attack(
        sign(BODY, url=URL.replace(".com", ".com:8443"), key=CURRENT_KEY),
        code="subject_mismatch",
    ),
    "sub for another job": lambda: Attack(
        sign(BODY, url=APP_URL + "/api/jobs/resize", key=CURRENT_KEY), code="subject_mismatch"
    ),
    "sub with a trailing slash": lambda: Attack(
        sign(BODY, url=URL + "/", key=CURRENT_KEY), code="subject_mismatch"
    ),
    "sub with a query the request lacks": lambda: Attack(
        sign(BODY, url=URL + "?tenant=a", key=CURRENT_KEY), code="subject_mismatch"
    ),
    "request with a query the sub lacks": lambda: Attack(
        sign(BODY, url=URL, key=CURRENT_KEY), path=PATH + "?tenant=b", code="subject_mismatch"
    ),
    "alg none": lambda: Attack(
        forge({"alg": "none", "typ": "JWT"}, claims_for(BODY, URL), None),
        code="algorithm_not_allowed",
    ),
    "alg none signed anyway": lambda: Attack(
        forge({"alg": "none", "typ": "JWT"}, claims_for(BODY, URL), CURRENT_KEY),
        code="algorithm_not_allowed",
    ),
    "HS512 with the right key": lambda: Attack(
        jwt.encode(claims_for(BODY, URL), CURRENT_KEY * 2, algorithm="HS512"),
        code="algorithm_not_allowed",
    ),
    "RS256 with an attacker's RSA key": lambda: Attack(
        _rs256_token(), code="algorithm_not_allowed"
    ),
    "RS256 header, HMAC body (key confusion)": lambda: Attack(
        forge({"alg": "RS256", "typ": "JWT"}, claims_for(BODY, URL), CURRENT_KEY),
        code="algorithm_not_allowed",
    ),
    "signed with a third key": lambda: Attack(
        sign(BODY, url=URL, key="sig_attacker_0123456789abcdefghij"), code="signature_mismatch"
    ),
    "right claims, signature of another token": lambda: Attack(
        sign(BODY, url=URL, key=CURRENT_KEY).rsplit(".", 1)[0]
        + "."
        + sign(b"{}", url=URL, key=CURRENT_KEY).rsplit(".", 1)[1],
        code="signature_mismatch",
    ),
    "body claim not a string": lambda: Attack(
        forge(HS256, claims_for(BODY, URL, body=12345), CURRENT_KEY), code="malformed_signature"
    ),
    "exp not a number": lambda: Attack(
        forge(HS256, claims_for(BODY, URL, exp="tomorrow"), CURRENT_KEY),
        code="malformed_signature",
    ),
    **{
        f"missing {claim}": (
            lambda claim=claim: Attack(  # type: ignore[misc]
                forge(HS256, claims_for(BODY, URL, **{claim: None}), CURRENT_KEY),
                code="missing_claim",
            )
        )
        for claim in ("iss", "sub", "exp", "nbf", "body")
    },
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_is_refused_and_handler_does_not_run(
    name: str, client: DeliveryClient, calls: Calls
) -> None:
    """A forged or tampered delivery answers 401 with its reason; the handler never runs."""
    attack = ATTACKS[name]()
    headers = {"Content-Type": "application/json", "Upstash-Message-Id": "msg_attack"}
    if attack.token is not None:
        headers["Upstash-Signature"] = attack.token
    response = client.post(attack.path, data=attack.body, headers=headers)
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.get_json()["code"] == attack.code
    assert len(calls) == 0


def test_refusal_reveals_no_key(client: DeliveryClient) -> None:
    """A 401 explains the failure without echoing any signing key."""
    token = sign(BODY, url=URL, key="sig_attacker_0123456789abcdefghij")
    response = client.post(PATH, data=BODY, headers={"Upstash-Signature": token})
    text = response.get_data(as_text=True)
    assert CURRENT_KEY not in text and NEXT_KEY not in text
    assert "neither" in response.get_json()["message"]


ACCEPTED: dict[str, Callable[[], str]] = {
    "a fresh token from the current key": lambda: sign(BODY, url=URL, key=CURRENT_KEY),
    "a token valid under the next key only": lambda: sign(BODY, url=URL, key=NEXT_KEY),
    "expired within the clock tolerance": lambda: sign(
        BODY, url=URL, key=CURRENT_KEY, now=int(time.time()) - 303
    ),
    "nbf 0 (as QStash sends since 2024)": lambda: sign(
        BODY, url=URL, key=CURRENT_KEY, not_before=0
    ),
    "nbf in the past": lambda: sign(
        BODY, url=URL, key=CURRENT_KEY, not_before=int(time.time()) - 10
    ),
    "body claim without base64 padding": lambda: forge(HS256, claims_for(BODY, URL), CURRENT_KEY),
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_valid_token_is_accepted(name: str, client: DeliveryClient, calls: Calls) -> None:
    """A token QStash could have made is accepted and the handler runs once."""
    headers = {"Upstash-Signature": ACCEPTED[name](), "Content-Type": "application/json"}
    response = client.post(PATH, data=BODY, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert len(calls) == 1


def test_signature_header_name_is_case_insensitive(client: DeliveryClient, calls: Calls) -> None:
    """HTTP header names are case-insensitive; a lower-cased header still verifies."""
    response = client.post(
        PATH, data=BODY, headers={"upstash-signature": sign(BODY, url=URL, key=CURRENT_KEY)}
    )
    assert response.status_code == 200
    assert len(calls) == 1
