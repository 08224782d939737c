"""Hostile deliveries to a workflow's endpoint: every one gets a clear answer, never a 500.

The query is signed with the URL, so only someone holding the signing key can send these;
the engine still refuses each malformed one with a 4xx and changes no run it should not.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.jobs import JobRegistry
from app.testing import DeliveryClient
from app.workflows import list_runs, workflow

texts = st.text(max_size=300)
numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(["", "0x10", "1e3", "٣", "²", " 1", "1 ", "+1", "-0", "9" * 40]),
    texts,
)
queries = st.fixed_dictionaries(
    {},
    optional={"run": texts, "step": numbers, "branch": numbers, "at": numbers},
)
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=10,
    ).map(lambda v: __import__("json").dumps(v).encode()),
)


def test_malformed_queries_and_bodies_get_clear_answers(
    make_app: Any, registry: JobRegistry
) -> None:
    @workflow("target", registry=registry)
    def target(ctx: Any, payload: Any) -> Any:
        return ctx.run("echo", lambda: payload)

    app, queue = make_app()
    client = DeliveryClient(app)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(query=queries, body=bodies)
    def check(query: dict[str, str], body: bytes) -> None:
        response = client.deliver("target", body=body, query=urlencode(query))
        assert response.status_code in (200, 400, 489), (query, body, response.get_data())
        if response.status_code != 200:
            assert response.is_json and response.json["code"]

    check()
    with app.app_context():
        runs = list_runs(limit=1000)
    assert all(run.state in ("completed", "running", "waiting") for run in runs)


def test_any_message_id_starts_one_run(make_app: Any, registry: JobRegistry) -> None:
    """A plain publish starts the run named after its message id; an id that cannot name a
    run (the header is not signed) is hashed, never a 500, and a redelivery starts nothing."""
    calls: list[int] = []

    @workflow("plain-start", registry=registry)
    def plain_start(ctx: Any, payload: Any) -> Any:
        return ctx.run("count", lambda: calls.append(1))

    app, _ = make_app()
    client = DeliveryClient(app)

    # What an HTTP header can carry: WSGI gives its bytes as latin-1 characters.
    latin1 = st.characters(min_codepoint=33, max_codepoint=255)

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(message_id=st.text(alphabet=latin1, min_size=1, max_size=300))
    def check(message_id: str) -> None:
        before = len(calls)
        for retried in (0, 1):
            response = client.deliver("plain-start", {}, message_id=message_id, retried=retried)
            assert response.status_code == 200, (message_id, response.get_data())
        assert len(calls) == before + 1

    check()
