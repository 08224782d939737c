"""The official npm ``@upstash/qstash`` client and Receiver against the dev server."""

from __future__ import annotations

from typing import Any

import pytest

from tests.devserver.js_oracle import run_oracle


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_oracle("oracle.mjs", tmp_path_factory.mktemp("js") / "qstash.db")


def test_publish_json_delivery_verified_by_js_receiver(observed: dict[str, Any]) -> None:
    """publishJSON's message arrives with its id and passes the official JS Receiver."""
    assert observed["publish"] == {"sameId": True, "verified": True, "body": '{"hello":"js"}'}


def test_js_receiver_rejects_a_forged_body(observed: dict[str, Any]) -> None:
    """The JS Receiver refuses the same signature over another body."""
    assert observed["forgedBodyRejected"] is True


def test_batch_json(observed: dict[str, Any]) -> None:
    """batchJSON answers one id per message and both deliveries verify."""
    assert observed["batch"] == {"ids": 2, "verified": True}


def test_schedules(observed: dict[str, Any]) -> None:
    """Schedules are created, read, paused, resumed, listed, fired with their id and deleted."""
    assert observed["schedules"] == {
        "cron": "* * * * *",
        "paused": True,
        "listed": True,
        "firedWithId": True,
        "verified": True,
        "afterDelete": 0,
    }


def test_queues(observed: dict[str, Any]) -> None:
    """Queues are upserted, paused (holding messages), resumed, listed and deleted."""
    assert observed["queues"] == {
        "parallelism": 2,
        "paused": True,
        "lag": 1,
        "listed": ["js-queue"],
        "verified": True,
    }


def test_dlq(observed: dict[str, Any]) -> None:
    """A 489 + Upstash-NonRetryable-Error is attempted once, listed in the DLQ and deletable."""
    assert observed["dlq"] == {"sameId": True, "status": 489, "attempts": 1, "afterDelete": 0}


def test_bulk_cancel_by_filter_and_count(observed: dict[str, Any]) -> None:
    """messages.cancel: a flow-control key filter cancels its one message, a typo is refused,
    count: 1 cancels one, and all: true the rest."""
    assert observed["bulkCancel"] == {"byKey": 1, "typo": "rejected", "oneOfAll": 1, "rest": 1}


def test_dlq_bulk_actions_by_filter(observed: dict[str, Any]) -> None:
    """dlq.delete/retry: an unmatched url deletes none, a typo is refused, labels match
    either, a flow-control key and count: 1 act on one entry each."""
    assert observed["dlqFilters"] == {
        "noMatch": 0,
        "noCursor": True,
        "typo": "rejected",
        "either": 2,
        "byKey": 1,
        "retried": 1,
        "countOne": 1,
    }


def test_several_labels(observed: dict[str, Any]) -> None:
    """publishJSON with label: ["a", "b"] reads back as label "a" and labels ["a", "b"], and
    a cancel filtered by either label finds it."""
    assert observed["labels"] == {"label": "a", "labels": ["a", "b"], "cancelled": 1}
