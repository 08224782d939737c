"""Arbitrary JSON to every job endpoint: answered 200, 489 or 503, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import outbound
from app.testing import DeliveryClient

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
# Payloads close to valid ones, so that validation is exercised past the first field.
FIELDS = {
    "send-email": ["to", "template", "data"],
    "process-image": ["fileKey", "userId", "operations", "targetWidth"],
    "deliver-webhook": ["webhookId", "eventType", "payload", "targetUrl", "secret"],
    "webhook-failed": ["status", "body", "sourceBody", "retried", "maxRetries", "dlqId"],
}


def near_valid(job: str) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({}, optional=dict.fromkeys(FIELDS[job], JSON))


def _unreachable(host: str, port: int) -> list[str]:
    raise OSError("no network in this test")


@pytest.mark.parametrize("job", sorted(FIELDS))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_arbitrary_payloads_never_crash(
    client: DeliveryClient, monkeypatch: pytest.MonkeyPatch, job: str, data: st.DataObject
) -> None:
    """Whatever JSON arrives, each job answers 200, 489 or 503 (never a 500)."""
    monkeypatch.setattr(outbound, "resolve", _unreachable)
    payload = data.draw(JSON | near_valid(job))
    response = client.deliver(job, payload)
    assert response.status_code in (200, 489, 503), (payload, response.get_json())
