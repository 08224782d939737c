"""/metrics in one process, its optional token, and the log format setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Response
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.errors import ConfigurationError
from app.testing import DeliveryClient
from tests.conftest import TEST_CONFIG, Calls, make_registry
from tests.ops.conftest import ops_config

ROOT = Path(__file__).resolve().parents[2]


def samples(client: DeliveryClient, **headers: str) -> dict[str, float]:
    text = client.get("/metrics", headers=headers).get_data(as_text=True)
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_redeliveries_and_duplicates_are_counted(calls: Calls, tmp_path: Path) -> None:
    """A QStash retry counts as a redelivery; the guard's replay counts as a duplicate."""
    config = ops_config(f"sqlite:///{tmp_path}/m.sqlite3")
    client = DeliveryClient(create_app(config, registry=make_registry(calls)))
    client.deliver("noop", {}, message_id="msg_m")
    client.deliver("noop", {}, message_id="msg_m", retried=1)
    found = samples(client)
    assert found["qstash_redeliveries_total[('job', 'noop')]"] == 1
    assert found["qstash_duplicate_deliveries_total[('answer', 'replayed'), ('job', 'noop')]"] == 1


def test_metrics_token_is_required_when_set(calls: Calls) -> None:
    """With METRICS_TOKEN a scrape without the bearer token, or with a wrong one, gets 401."""
    app = create_app(
        {**TEST_CONFIG, "METRICS_TOKEN": "scrape-secret"}, registry=make_registry(calls)
    )
    client = DeliveryClient(app)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    right = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert right.status_code == 200 and b"qstash_deliveries" in right.data


def test_metrics_can_be_switched_off(calls: Calls) -> None:
    """METRICS=0 removes the endpoint."""
    app = create_app({**TEST_CONFIG, "METRICS": False}, registry=make_registry(calls))
    assert DeliveryClient(app).get("/metrics").status_code == 404


def test_unknown_log_format_is_refused(calls: Calls) -> None:
    """LOG_FORMAT other than text or json stops the app with a clear message."""
    with pytest.raises(ConfigurationError, match="LOG_FORMAT must be text or json"):
        create_app({**TEST_CONFIG, "LOG_FORMAT": "xml"}, registry=make_registry(calls))


def test_an_empty_multiprocess_dir_means_in_process_metrics(tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR="" must not spray sample files into the working directory."""
    script = (
        "from app.metrics import Metrics\n"
        "metrics = Metrics()\n"
        "metrics.deliveries.labels(job='noop', outcome='ok').inc()\n"
        "print(metrics.deliveries.labels(job='noop', outcome='ok')._value.get())\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1.0"
    assert list(tmp_path.iterdir()) == []


def signature_failures(client: DeliveryClient) -> dict[tuple[str, str], float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (s.labels["job"], s.labels["reason"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "qstash_signature_failures_total"
    }


def test_refusals_are_counted_by_a_fixed_reason(calls: Calls) -> None:
    """Each request refused before verification counts once, labelled with our own code."""
    app = create_app({**TEST_CONFIG, "QSTASH_MAX_BODY_SIZE": 64}, registry=make_registry(calls))
    client = DeliveryClient(app)
    chosen = {"Upstash-Message-Id": "msg_<script>", "Upstash-Retried": "9"}
    client.post("/api/jobs/noop", data=b"{}", headers=chosen)
    client.post("/api/jobs/noop", data=b"{}", headers={**chosen, "Upstash-Signature": "a.b.c"})
    client.post("/api/jobs/noop", data=b"{}", headers={**chosen, "Upstash-Signature": "a.b.c"})
    client.post("/api/jobs/resize", data=b"x" * 65, headers=chosen)
    client.deliver("noop", {}, key="sig_forger_0123456789abcdefghijk")
    assert signature_failures(client) == {
        ("noop", "missing_signature"): 1,
        ("noop", "malformed_signature"): 2,
        ("resize", "payload_too_large"): 1,
        ("noop", "signature_mismatch"): 1,
    }
    text = client.get("/metrics").get_data(as_text=True)
    assert "<script>" not in text
    assert len(calls) == 0


def test_a_handlers_own_401_is_no_signature_failure(calls: Calls) -> None:
    """A verified delivery its handler answers 401 counts as an error, whatever its body says."""
    registry = make_registry(calls)
    registry.job("upstream")(
        lambda payload, delivery: Response(
            '{"code": "caller-chosen-label"}', status=401, mimetype="application/json"
        )
    )
    client = DeliveryClient(create_app(TEST_CONFIG, registry=registry))
    assert client.deliver("upstream", {}).status_code == 401
    assert signature_failures(client) == {}
    found = samples(client)
    assert found["qstash_deliveries_total[('job', 'upstream'), ('outcome', 'error')]"] == 1
    assert "caller-chosen-label" not in client.get("/metrics").get_data(as_text=True)
