"""Metrics and JSON logs under gunicorn with several workers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.qstash.signature import sign
from tests.ops.test_e2e_guard import APP_URL, deliver, server_env
from tests.servers import Server, gunicorn

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, set[int]]]:
    """A 3-worker server after 12 ok, 5 non-retryable and 3 forged deliveries."""
    tmp = tmp_path_factory.mktemp("metrics")
    env = server_env(f"sqlite:///{tmp / 'log.sqlite3'}", tmp / "effects", LOG_FORMAT="json")
    with gunicorn(tmp, env, workers=3) as running:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda i: deliver(running, "pid", f"msg_ok_{i}"), range(12)))
        pids = {answer.json()["pid"] for answer in answers}
        for i in range(5):
            assert deliver(running, "refuse", f"msg_no_{i}").status_code == 489
        forged = sign(b"{}", url=f"{APP_URL}/api/jobs/pid", key="sig_forger_0123456789abcdefghijk")
        for i in range(3):
            headers = {"Upstash-Signature": forged, "Upstash-Message-Id": f"msg_forged_{i}"}
            httpx.post(f"{running.url}/api/jobs/pid", content=b"{}", headers=headers)
        yield running, pids


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of one scrape, keyed by name and sorted labels."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counts_from_every_worker_add_up(server: tuple[Server, set[int]]) -> None:
    """Deliveries answered by different workers are all counted in one scrape."""
    running, pids = server
    assert len(pids) > 1  # the deliveries really were spread over workers
    samples = scrape(running)
    ok = ("qstash_deliveries_total", (("job", "pid"), ("outcome", "ok")))
    refused = ("qstash_deliveries_total", (("job", "refuse"), ("outcome", "non-retryable")))
    forged = ("qstash_deliveries_total", (("job", "pid"), ("outcome", "bad-signature")))
    assert (samples[ok], samples[refused], samples[forged]) == (12, 5, 3)


def test_duration_histogram_counts_every_delivery(server: tuple[Server, set[int]]) -> None:
    """The duration histogram saw 15 deliveries of pid, each at least the handler's 50 ms."""
    samples = scrape(server[0])
    assert samples[("qstash_delivery_duration_seconds_count", (("job", "pid"),))] == 15
    fast = ("qstash_delivery_duration_seconds_bucket", (("job", "pid"), ("le", "0.025")))
    assert samples[fast] == 3  # only the forged ones, refused before any handler ran


def test_signature_failures_by_reason(server: tuple[Server, set[int]]) -> None:
    """Forged deliveries are counted with the verifier's reason."""
    samples = scrape(server[0])
    key = ("qstash_signature_failures_total", (("job", "pid"), ("reason", "signature_mismatch")))
    assert samples[key] == 3


def test_every_line_of_a_delivery_carries_its_message_id(server: tuple[Server, set[int]]) -> None:
    """With LOG_FORMAT=json each line logged during a delivery is JSON with the message id."""
    lines = [json.loads(line) for line in server[0].output().splitlines() if line.startswith("{")]
    handled = [line for line in lines if line["message"].startswith("handling in worker")]
    refused = [line for line in lines if line["message"] == "refusing this payload"]
    rejected = [line for line in lines if line["message"].startswith("rejected delivery")]
    assert len(handled) == 12 and len(refused) == 5 and len(rejected) == 3
    assert {line["message_id"] for line in handled} == {f"msg_ok_{i}" for i in range(12)}
    assert all(line["job"] == "refuse" for line in refused)
    assert {line["message_id"] for line in rejected} == {f"msg_forged_{i}" for i in range(3)}
