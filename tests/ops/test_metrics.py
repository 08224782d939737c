"""/metrics in one process, its optional token, and the log format setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
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
