"""Prometheus metrics of deliveries, served at ``/metrics``.

Under gunicorn each worker is its own process: with ``PROMETHEUS_MULTIPROC_DIR`` set
(``gunicorn.conf.py`` sets it before the app is imported) prometheus-client writes every
sample to a file per process and ``/metrics`` adds the files of all workers up, so a scrape
answered by any worker reports the whole server. Without it (flask run, tests) the
metrics live in the process. ``METRICS_TOKEN`` puts the endpoint behind a bearer token.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Response, current_app, request

# An empty PROMETHEUS_MULTIPROC_DIR means "unset", as in a shell. prometheus-client, which
# decides when first imported, would take it as the current directory and write a
# counter_<pid>.db and histogram_<pid>.db there for every worker.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

from prometheus_client import (  # noqa: E402 - after the environment is settled
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.answers import error_response
from app.hooks import add_delivery_hook, outcome, refusal
from app.receiver import bearer_matches
from app.store.guard import guard_verdict

if TYPE_CHECKING:
    from flask import Flask

    from app.delivery import Delivery

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
EXTENSION = "qstash_jobs.metrics"
# QStash's own timeouts reach minutes: buckets past prometheus-client's default 10 s.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The delivery metrics of one app, and the hook that updates them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "qstash_deliveries",
            "Deliveries answered, by job and outcome (ok, retry, non-retryable, error,"
            " bad-signature).",
            ["job", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "qstash_delivery_duration_seconds",
            "Time from receiving a delivery to answering it.",
            ["job"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.redeliveries = Counter(
            "qstash_redeliveries",
            "Deliveries that were QStash retries (Upstash-Retried > 0).",
            ["job"],
            registry=self.registry,
        )
        self.signature_failures = Counter(
            "qstash_signature_failures",
            "Requests refused before their signature was verified, by reason (missing_signature,"
            " signature_mismatch, …, payload_too_large).",
            ["job", "reason"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "qstash_duplicate_deliveries",
            "Deliveries the duplicate guard answered: replayed (done before) or busy.",
            ["job", "answer"],
            registry=self.registry,
        )

    def before_handler(self, delivery: Delivery) -> Response | None:
        """Never answer early: metrics only observe."""
        return None

    def after_delivery(
        self, job: str | None, delivery: Delivery | None, response: Response, duration: float
    ) -> None:
        """Count the delivery and observe its duration.

        Every label is bounded: the job is a route's, the outcome, reason and answer are
        codes of this framework, never a value the caller chose.
        """
        name = job or "?"
        status = response.status_code
        self.deliveries.labels(name, outcome(status, verified=delivery is not None)).inc()
        self.duration.labels(name).observe(duration)
        if delivery is not None and delivery.retried > 0:
            self.redeliveries.labels(name).inc()
        reason = refusal(response)
        if reason is not None:
            self.signature_failures.labels(name, reason).inc()
        guard = guard_verdict(response)
        if guard:
            self.duplicates.labels(name, guard).inc()


def render() -> Response:
    """Answer a scrape: every worker's samples in multiprocess mode, else this process's."""
    token = current_app.config.get("METRICS_TOKEN")
    if token and not bearer_matches(request, token):
        return error_response(401, "unauthorized", "send Authorization: Bearer <METRICS_TOKEN>")
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = current_app.extensions[EXTENSION].registry
    return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> Metrics | None:
    """Count every delivery and serve ``GET /metrics`` (unless METRICS is off)."""
    if not app.config["METRICS"]:
        return None
    metrics = Metrics()
    app.extensions[EXTENSION] = metrics
    add_delivery_hook(app, metrics)
    app.add_url_rule("/metrics", "metrics", render, methods=["GET"])
    return metrics


def prepare_multiprocess_dir(path: str) -> None:
    """Empty the samples directory at server start: stale files would add to new counts."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):  # only prometheus-client's own files
        stale.unlink()


def worker_exited(pid: int) -> None:
    """Tell prometheus-client a worker died (gunicorn's ``child_exit`` hook)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
