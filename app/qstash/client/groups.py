"""URL groups (QStash's topics): named lists of endpoints one publish fans out to.

```python
qstash.upsert_endpoints("orders", ["https://a.example/hook", ("https://b.example/hook", "b")])
results = qstash.publish_json("orders", {"id": 7})   # one message per endpoint
[r.url for r in results.endpoints]
```
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from app.qstash.client.base import JSON, BaseClient
from app.qstash.client.options import check_name, check_url

#: An endpoint as callers give it: a URL, or (URL, name).
EndpointSpec = str | tuple[str, str]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint of a URL group."""

    url: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class UrlGroup:
    """A URL group: its name and endpoints."""

    name: str
    endpoints: tuple[Endpoint, ...]
    created_at: int | None = None
    updated_at: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UrlGroup:
        """Read one URL group object of QStash's API."""
        members = tuple(
            Endpoint(str(item.get("url", "")), item.get("name") or None)
            for item in data.get("endpoints") or []
        )
        created, updated = data.get("createdAt"), data.get("updatedAt")
        return cls(
            name=str(data["name"]),
            endpoints=members,
            created_at=created if isinstance(created, int) else None,
            updated_at=updated if isinstance(updated, int) else None,
            raw=data,
        )


def _endpoint(spec: EndpointSpec) -> dict[str, str]:
    if isinstance(spec, str):
        return {"url": check_url(spec, "endpoint url")}
    url, name = spec
    return {"url": check_url(url, "endpoint url"), "name": check_name(name, "endpoint name")}


class GroupsAPI(BaseClient):
    """URL groups, mixed into ``QStash``."""

    def upsert_endpoints(self, group: str, endpoints: Iterable[EndpointSpec]) -> None:
        """Add endpoints to ``group`` (created if missing); a known name or URL is updated."""
        self._endpoints("POST", group, [_endpoint(spec) for spec in endpoints])

    def remove_endpoints(self, group: str, endpoints: Iterable[str]) -> None:
        """Remove endpoints by URL or by name; the group goes with its last endpoint."""
        items = [{"url": e} if "://" in e else {"name": check_name(e, "name")} for e in endpoints]
        self._endpoints("DELETE", group, items)

    def get_url_group(self, group: str) -> UrlGroup:
        """Return one URL group."""
        return UrlGroup.from_json(self._call("GET", self._group_path(group)))

    def list_url_groups(self) -> list[UrlGroup]:
        """Return every URL group."""
        return [UrlGroup.from_json(item) for item in self._call("GET", "/v2/topics") or []]

    def delete_url_group(self, group: str) -> None:
        """Delete a URL group and its endpoints."""
        self._call("DELETE", self._group_path(group))

    def _endpoints(self, method: str, group: str, items: list[dict[str, str]]) -> None:
        if not items:
            raise ValueError("name at least one endpoint")
        content = json.dumps({"endpoints": items}).encode()
        path = self._group_path(group) + "/endpoints"
        self._call(method, path, headers={"Content-Type": JSON}, content=content)

    @staticmethod
    def _group_path(group: str) -> str:
        return f"/v2/topics/{check_name(group, 'URL group')}"
