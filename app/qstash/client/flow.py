"""Flow-control keys: what each holds back, and pausing, pinning or resetting it.

```python
info = qstash.flow_control("tenant-7")        # waitlist, parallelism and rate in use
qstash.pause_flow_control("tenant-7")          # its due messages wait…
qstash.resume_flow_control("tenant-7")         # …and go again, oldest first
qstash.pin_flow_control("tenant-7", parallelism=2)
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.qstash.client.base import BaseClient, path_segment


def _int(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True, slots=True)
class FlowControlInfo:
    """One flow-control key as QStash reports it."""

    key: str
    wait_list_size: int = 0
    parallelism_max: int = 0
    parallelism_count: int = 0
    rate_max: int = 0
    rate_count: int = 0
    rate_period: int = 0
    rate_period_start: int = 0
    paused: bool = False
    pinned_parallelism: bool = False
    pinned_rate: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FlowControlInfo:
        """Read one flow-control object of QStash's API."""
        return cls(
            key=str(data.get("flowControlKey", "")),
            wait_list_size=_int(data, "waitListSize"),
            parallelism_max=_int(data, "parallelismMax"),
            parallelism_count=_int(data, "parallelismCount"),
            rate_max=_int(data, "rateMax"),
            rate_count=_int(data, "rateCount"),
            rate_period=_int(data, "ratePeriod"),
            rate_period_start=_int(data, "ratePeriodStart"),
            paused=data.get("isPaused") is True,
            pinned_parallelism=data.get("isPinnedParallelism") is True,
            pinned_rate=data.get("isPinnedRate") is True,
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class GlobalParallelism:
    """The account-wide parallelism limit and how much of it is in use."""

    parallelism_max: int
    parallelism_count: int


def _positive(name: str, value: int | None) -> str | None:
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise ValueError(f"{name} must be an int >= 1, not {value!r}")
    return str(value)


class FlowControlAPI(BaseClient):
    """Flow-control management, mixed into ``QStash``."""

    def flow_control(self, key: str) -> FlowControlInfo:
        """Return one flow-control key."""
        return FlowControlInfo.from_json(self._call("GET", self._flow_path(key)))

    def list_flow_control(self, search: str | None = None) -> list[FlowControlInfo]:
        """Return every flow-control key (those containing ``search``, if given)."""
        params = {"search": search} if search else None
        data = self._call("GET", "/v2/flowControl", params=params) or []
        return [FlowControlInfo.from_json(item) for item in data]

    def global_parallelism(self) -> GlobalParallelism:
        """Return the global parallelism limit and its use."""
        data = self._call("GET", "/v2/globalParallelism") or {}
        return GlobalParallelism(_int(data, "parallelismMax"), _int(data, "parallelismCount"))

    def pause_flow_control(self, key: str) -> None:
        """Hold the key's messages (new ones too) until it is resumed."""
        self._call("POST", self._flow_path(key) + "/pause")

    def resume_flow_control(self, key: str) -> None:
        """Deliver the key's messages again."""
        self._call("POST", self._flow_path(key) + "/resume")

    def pin_flow_control(
        self,
        key: str,
        *,
        parallelism: int | None = None,
        rate: int | None = None,
        period: int | None = None,
    ) -> None:
        """Fix the key's limits (period in seconds) over what its messages carry."""
        values = {
            "parallelism": _positive("parallelism", parallelism),
            "rate": _positive("rate", rate),
            "period": _positive("period", period),
        }
        params = {name: value for name, value in values.items() if value is not None}
        if not params:
            raise ValueError("pin at least one of parallelism, rate and period")
        self._call("POST", self._flow_path(key) + "/pin", params=params)

    def unpin_flow_control(
        self, key: str, *, parallelism: bool = False, rate: bool = False
    ) -> None:
        """Let the messages' own parallelism and/or rate apply again."""
        if not (parallelism or rate):
            raise ValueError("unpin parallelism and/or rate")
        params = {"parallelism": str(parallelism).lower(), "rate": str(rate).lower()}
        self._call("POST", self._flow_path(key) + "/unpin", params=params)

    def reset_flow_control_rate(self, key: str) -> None:
        """Start the key's rate window afresh now."""
        self._call("POST", self._flow_path(key) + "/resetRate")

    @staticmethod
    def _flow_path(key: str) -> str:
        return f"/v2/flowControl/{path_segment(key, 'flow-control key')}"
