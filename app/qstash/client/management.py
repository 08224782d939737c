"""Managing QStash: schedules, queues, the dead-letter queue and signing keys."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from app.qstash.client.base import JSON, BaseClient, as_bytes, path_segment, random_id
from app.qstash.client.models import (
    DlqMessage,
    DlqPage,
    PublishResult,
    Queue,
    Schedule,
    SigningKeys,
)
from app.qstash.client.options import PublishOptions, check_destination, check_name
from app.qstash.cron import parse_cron

#: Options a schedule cannot carry (they describe one message, not a series).
_NOT_FOR_SCHEDULES = ("not_before", "deduplication_id", "content_based_deduplication")


class ManagementAPI(BaseClient):
    """Schedules, queues, DLQ and signing keys (mixed into ``QStash``)."""

    # -- schedules -------------------------------------------------------------------------

    def create_schedule(
        self,
        destination: str,
        cron: str,
        *,
        schedule_id: str | None = None,
        body: bytes | str | None = None,
        queue: str | None = None,
        **options: Any,
    ) -> str:
        """Create a schedule, or update the one with ``schedule_id``; return its id.

        Without ``schedule_id`` a random one is chosen here, so that a create retried
        after a lost answer updates the same schedule instead of making a second one.
        """
        refused = [name for name in _NOT_FOR_SCHEDULES if options.get(name)]
        if refused:
            raise ValueError(f"a schedule cannot have {', '.join(refused)}")
        expression = parse_cron(cron).text  # InvalidCron is a ValueError
        headers = {"Upstash-Cron": expression, **PublishOptions(**options).headers_dict()}
        schedule_id = f"scd_{random_id()}" if schedule_id is None else schedule_id
        headers["Upstash-Schedule-Id"] = path_segment(schedule_id, "schedule id")
        if queue is not None:
            headers["Upstash-Queue-Name"] = check_name(queue, "queue")
        path = f"/v2/schedules/{check_destination(destination)}"
        data = self._call("POST", path, headers=headers, content=as_bytes(body))
        return str(data["scheduleId"]) if isinstance(data, dict) else str(schedule_id)

    def get_schedule(self, schedule_id: str) -> Schedule:
        """Return one schedule."""
        return Schedule.from_json(self._call("GET", self._schedule_path(schedule_id)))

    def list_schedules(self) -> list[Schedule]:
        """Return every schedule of the account."""
        return [Schedule.from_json(item) for item in self._call("GET", "/v2/schedules") or []]

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule."""
        self._call("DELETE", self._schedule_path(schedule_id))

    def pause_schedule(self, schedule_id: str) -> None:
        """Pause a schedule: its cron firings are ignored until resumed."""
        self._call("POST", self._schedule_path(schedule_id) + "/pause")

    def resume_schedule(self, schedule_id: str) -> None:
        """Resume a paused schedule."""
        self._call("POST", self._schedule_path(schedule_id) + "/resume")

    @staticmethod
    def _schedule_path(schedule_id: str) -> str:
        return f"/v2/schedules/{path_segment(schedule_id, 'schedule id')}"

    # -- queues ----------------------------------------------------------------------------

    def upsert_queue(self, name: str, *, parallelism: int = 1, paused: bool | None = None) -> None:
        """Create the queue ``name`` or change its parallelism (and paused state, if given)."""
        if type(parallelism) is not int or parallelism < 1:
            raise ValueError(f"parallelism must be an int >= 1, not {parallelism!r}")
        data: dict[str, Any] = {"queueName": check_name(name, "queue"), "parallelism": parallelism}
        if paused is not None:
            data["paused"] = bool(paused)
        content = json.dumps(data).encode()
        self._call("POST", "/v2/queues", headers={"Content-Type": JSON}, content=content)

    def get_queue(self, name: str) -> Queue:
        """Return one queue."""
        return Queue.from_json(self._call("GET", f"/v2/queues/{check_name(name, 'queue')}"))

    def list_queues(self) -> list[Queue]:
        """Return every queue of the account."""
        return [Queue.from_json(item) for item in self._call("GET", "/v2/queues") or []]

    def delete_queue(self, name: str) -> None:
        """Delete a queue."""
        self._call("DELETE", f"/v2/queues/{check_name(name, 'queue')}")

    def pause_queue(self, name: str) -> None:
        """Pause a queue: messages wait in it until it is resumed."""
        self._call("POST", f"/v2/queues/{check_name(name, 'queue')}/pause")

    def resume_queue(self, name: str) -> None:
        """Resume a paused queue."""
        self._call("POST", f"/v2/queues/{check_name(name, 'queue')}/resume")

    # -- dead-letter queue -----------------------------------------------------------------

    def list_dlq(
        self, *, cursor: str | None = None, count: int | None = None, **filters: str
    ) -> DlqPage:
        """Return one page of the DLQ (filters: messageId, url, queueName, scheduleId…)."""
        params = {key: str(value) for key, value in filters.items() if value is not None}
        if cursor is not None:
            params["cursor"] = cursor
        if count is not None:
            params["count"] = str(count)
        data = self._call("GET", "/v2/dlq", params=params) or {}
        messages = [DlqMessage.from_json(item) for item in data.get("messages") or []]
        return DlqPage(messages=messages, cursor=data.get("cursor") or None)

    def get_dlq(self, dlq_id: str) -> DlqMessage:
        """Return one DLQ message."""
        data = self._call("GET", f"/v2/dlq/{path_segment(dlq_id, 'dlq id')}")
        return DlqMessage.from_json(data, dlq_id)

    def delete_dlq(self, dlq_id: str) -> None:
        """Remove one message from the DLQ."""
        self._call("DELETE", f"/v2/dlq/{path_segment(dlq_id, 'dlq id')}")

    def delete_dlq_many(self, dlq_ids: Iterable[str]) -> int:
        """Remove many messages from the DLQ; return how many were removed."""
        content = json.dumps({"dlqIds": list(dlq_ids)}).encode()
        data = self._call("DELETE", "/v2/dlq", headers={"Content-Type": JSON}, content=content)
        return int(data.get("deleted", 0)) if isinstance(data, dict) else 0

    def retry_dlq(self, dlq_id: str, **options: Any) -> PublishResult:
        """Publish a DLQ message again (options override the original's); return the new id."""
        publish_options = PublishOptions(**options)
        headers: Mapping[str, str] = publish_options.headers_dict(
            deduplication_id=self._dedup_id(publish_options)
        )
        path = f"/v2/dlq/retry/{path_segment(dlq_id, 'dlq id')}"
        return PublishResult.from_json(self._call("POST", path, headers=headers))

    # -- signing keys ----------------------------------------------------------------------

    def signing_keys(self) -> SigningKeys:
        """Return the account's current and next signing keys."""
        data = self._call("GET", "/v2/keys") or {}
        return SigningKeys(current=str(data.get("current", "")), next=str(data.get("next", "")))
