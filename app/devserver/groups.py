"""URL groups (QStash's "topics"): named lists of endpoints a publish fans out to.

| call                                   | what it does                                         |
|----------------------------------------|------------------------------------------------------|
| ``POST /v2/topics/{name}/endpoints``   | add or update endpoints (``{"endpoints": [{"url", |
|                                        | "name"?}]}``); creates the group                     |
| ``DELETE /v2/topics/{name}/endpoints`` | remove endpoints by ``url`` or ``name``; the group   |
|                                        | goes with its last endpoint                          |
| ``GET /v2/topics``, ``GET /v2/topics/{name}``, ``DELETE /v2/topics/{name}``           |

Publishing, enqueueing or batching to a group name stores one message per endpoint (with
``topicName`` and ``endpointName`` in its spec), each retried, called back, logged and
dead-lettered on its own, and answers one ``{"messageId", "url"}`` per endpoint. A
deduplication id applies per endpoint. Bounds: ``MAX_GROUPS`` groups of at most
``MAX_ENDPOINTS`` endpoints; a batch's fan-out counts against its ``MAX_BATCH`` messages.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from app.devserver.json_input import parse_json
from app.devserver.publish import APIError, bad_request, check_destination
from app.devserver.records import Message
from app.devserver.store import Store

if TYPE_CHECKING:
    from app.devserver.server import DevServer

#: Group and endpoint names: letters, digits, ``-``, ``_`` and ``.``, as QStash allows.
NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_GROUPS = 1000
MAX_ENDPOINTS = 100

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS url_groups (name TEXT PRIMARY KEY, endpoints TEXT NOT NULL,"
    " created REAL NOT NULL, updated REAL NOT NULL)"
)

Item = tuple[Message, str | None]


def install(store: Store) -> None:
    """Create the groups table if it is missing."""
    store.query(SCHEMA)


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


def _view(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "name": row[0],
        "endpoints": json.loads(row[1]),
        "createdAt": int(row[2] * 1000),
        "updatedAt": int(row[3] * 1000),
    }


def check_name(name: str) -> str:
    """Return ``name`` if it can name a URL group; 400 if not."""
    if not NAME.fullmatch(name):
        raise bad_request(
            f"invalid URL group name {name!r}: 1-128 letters, digits, '-', '_' or '.'"
        )
    return name


def endpoints(store: Store, name: str) -> list[dict[str, str]] | None:
    """Return the endpoints of the group ``name``, or None if there is no such group."""
    rows = store.query("SELECT endpoints FROM url_groups WHERE name = ?", (name,))
    return json.loads(rows[0][0]) if rows else None


# -- publishing to a group -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fanout:
    """The messages one publish (or batch item) stores: one, or one per endpoint."""

    items: list[Item]
    group: str | None

    def answer(self, answers: list[dict[str, Any]]) -> Any:
        """Return the API's answer: the one message's, or one per endpoint with its URL."""
        if self.group is None:
            return answers[0]
        return [
            {**answer, "url": message.spec["url"]}
            for answer, (message, _) in zip(answers, self.items, strict=True)
        ]


def expand(store: Store, destination: str, make: Callable[[str], Item]) -> Fanout:
    """Return the messages for ``destination``: ``make(url)`` once, or per group endpoint."""
    if "://" in destination:
        return Fanout([make(destination)], None)
    members = endpoints(store, check_name(destination))
    if members is None:
        raise APIError(404, f"URL group {destination!r} not found")
    items = []
    for member in members:
        message, key = make(member["url"])
        message.spec["topicName"] = destination
        if member.get("name"):
            message.spec["endpointName"] = member["name"]
        items.append((message, None if key is None else f"{key}\0{member['url']}"))
    return Fanout(items, destination)


def answers(fanouts: list[Fanout], accepted: list[dict[str, Any]]) -> list[Any]:
    """Split a batch's flat answers back into one answer per batch item."""
    result, start = [], 0
    for fanout in fanouts:
        result.append(fanout.answer(accepted[start : start + len(fanout.items)]))
        start += len(fanout.items)
    return result


# -- the API --------------------------------------------------------------------------------


def _endpoint_list(request: Request, *, removing: bool) -> list[dict[str, str]]:
    raw = request.get_data()
    data = parse_json(raw) if raw.strip() else None
    if not isinstance(data, dict) or set(data) != {"endpoints"}:
        raise bad_request('the body must be {"endpoints": [{"url": ..., "name"?: ...}, ...]}')
    items = data["endpoints"]
    if not isinstance(items, list) or not items:
        raise bad_request("endpoints must be a non-empty array")
    if len(items) > MAX_ENDPOINTS:
        raise bad_request(f"at most {MAX_ENDPOINTS} endpoints, not {len(items)}")
    result = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not set(item) <= {"url", "name"}:
            raise bad_request(f"endpoint {index}: an object with url and/or name only")
        url, name = item.get("url"), item.get("name")
        if url is not None:
            if not isinstance(url, str) or "://" not in url:
                raise bad_request(f"endpoint {index}: url must be an http(s) URL, not {url!r}")
            check_destination(url)
        if name is not None and (not isinstance(name, str) or not NAME.fullmatch(name)):
            raise bad_request(f"endpoint {index}: invalid name {name!r}")
        if url is None and (name is None or not removing):
            raise bad_request(f"endpoint {index}: needs a url" + (" or a name" if removing else ""))
        result.append({key: value for key, value in (("url", url), ("name", name)) if value})
    return result


def _upsert(members: list[dict[str, str]], new: dict[str, str]) -> None:
    """Add ``new``, or update the member with its name (or, unnamed, its URL)."""
    for member in members:
        same_name = "name" in new and member.get("name") == new["name"]
        if same_name or member["url"] == new["url"]:
            if same_name and member["url"] != new["url"]:
                member["url"] = new["url"]
            elif "name" in new:
                member["name"] = new["name"]
            return
    members.append(dict(new))


def add_endpoints(server: DevServer, request: Request, name: str) -> Response:
    """``POST /v2/topics/{name}/endpoints``."""
    check_name(name)
    added = _endpoint_list(request, removing=False)
    store, now = server.store, time.time()
    with store.transaction() as db:
        row = db.execute("SELECT endpoints, created FROM url_groups WHERE name = ?", (name,))
        found = row.fetchone()
        if found is None:
            total = db.execute("SELECT count(*) FROM url_groups").fetchone()[0]
            if total >= MAX_GROUPS:
                raise bad_request(f"the dev server holds at most {MAX_GROUPS} URL groups")
        members: list[dict[str, str]] = json.loads(found[0]) if found else []
        for endpoint in added:
            _upsert(members, endpoint)
        if len(members) > MAX_ENDPOINTS:
            raise bad_request(f"a URL group holds at most {MAX_ENDPOINTS} endpoints")
        db.execute(
            "INSERT INTO url_groups VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
            " endpoints = excluded.endpoints, updated = excluded.updated",
            (name, json.dumps(members), found[1] if found else now, now),
        )
    return Response(status=200)


def remove_endpoints(server: DevServer, request: Request, name: str) -> Response:
    """``DELETE /v2/topics/{name}/endpoints``: the group goes with its last endpoint."""
    check_name(name)
    removed = _endpoint_list(request, removing=True)
    with server.store.transaction() as db:
        found = db.execute("SELECT endpoints FROM url_groups WHERE name = ?", (name,)).fetchone()
        if found is None:
            raise APIError(404, f"URL group {name!r} not found")
        members: list[dict[str, str]] = json.loads(found[0])
        for gone in removed:
            kept = [m for m in members if not all(m.get(k) == v for k, v in gone.items())]
            if len(kept) == len(members):
                raise APIError(404, f"endpoint {gone} not found in URL group {name!r}")
            members = kept
        if members:
            db.execute(
                "UPDATE url_groups SET endpoints = ?, updated = ? WHERE name = ?",
                (json.dumps(members), time.time(), name),
            )
        else:
            db.execute("DELETE FROM url_groups WHERE name = ?", (name,))
    return Response(status=200)


def list_groups(server: DevServer, request: Request) -> Response:
    """``GET /v2/topics``: every group (at most ``MAX_GROUPS``), by name."""
    rows = server.store.query("SELECT * FROM url_groups ORDER BY name")
    return _json([_view(row) for row in rows])


def get_group(server: DevServer, request: Request, name: str) -> Response:
    """``GET /v2/topics/{name}``."""
    rows = server.store.query("SELECT * FROM url_groups WHERE name = ?", (check_name(name),))
    if not rows:
        raise APIError(404, f"URL group {name!r} not found")
    return _json(_view(rows[0]))


def delete_group(server: DevServer, request: Request, name: str) -> Response:
    """``DELETE /v2/topics/{name}``."""
    with server.store.transaction() as db:
        gone = db.execute("DELETE FROM url_groups WHERE name = ?", (check_name(name),))
        if gone.rowcount == 0:
            raise APIError(404, f"URL group {name!r} not found")
    return Response(status=200)


def schedule_to_group(request: Request, name: str) -> Response:
    """``POST /v2/schedules/{group}``: not done by the dev server (501)."""
    raise APIError(501, f"schedules to a URL group ({name!r}) are not supported by the dev server")
