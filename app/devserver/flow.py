"""The flow-control management API, acting on the delivery loop's gates (``gates.py``).

| call                                         | effect on delivery                           |
|----------------------------------------------|----------------------------------------------|
| ``GET /v2/flowControl[?search=]``            | every known key (at most ``MAX_LIST``)       |
| ``GET /v2/flowControl/{key}``                | waitlist size, parallelism and rate in use   |
| ``POST /v2/flowControl/{key}/pause``         | due messages of the key wait in order        |
| ``POST /v2/flowControl/{key}/resume``        | … and start again, oldest first              |
| ``POST …/pin?parallelism=&rate=&period=``    | these limits win over the messages' own      |
| ``POST …/unpin?parallelism=true&rate=true``  | the messages' limits apply again             |
| ``POST …/resetRate``                         | the rate window starts afresh now            |
| ``GET /v2/globalParallelism``                | the server's ``--concurrency`` and its use   |

The waitlist counts the key's messages that are due but not started (held by its
parallelism, its rate or a pause). Pauses and pins live in memory: a restart forgets them.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from app.devserver.gates import Gates, Ticket
from app.devserver.publish import APIError, ascii_int, bad_request
from app.qstash.timing import DurationError, parse_duration

if TYPE_CHECKING:
    from app.devserver.server import DevServer

#: The most keys one list call returns.
MAX_LIST = 1000
#: The dev server's bound on a pinned limit.
MAX_LIMIT = 1_000_000


def _json(data: Any) -> Response:
    return Response(json.dumps(data), mimetype="application/json")


def _known(gates: Gates) -> set[str]:
    return set(gates.flows) | set(gates.rates) | set(gates.paused) | set(gates.pins)


def _info(gates: Gates, tickets: list[Ticket], key: str, now: float) -> dict[str, Any]:
    gate, window, pin = gates.flows.get(key), gates.rates.get(key), gates.pins.get(key, {})
    held = list(gates.paused.get(key, ()))
    due = [t for t in tickets if t.flow and t.flow["key"] == key and t.message.due <= now]
    waiting = (len(gate.waiting) if gate else 0) + len(held) + len(due)
    # What the key's newest waiting message asks for, where no delivery has set it yet.
    asked: dict[str, Any] = next((t.flow for t in reversed(held + due) if t.flow), {})
    rate_count, period_start, period = 0, now, 0
    if window is not None:
        window.next_slot(now)  # drops the starts that left the window
        rate_count = len(window.starts)
        period_start = window.starts[0] if window.starts else now
        period = round(window.period / gates.time_scale)
    return {
        "flowControlKey": key,
        "waitListSize": waiting,
        "parallelismMax": pin.get("parallelism")
        or (gate.limit if gate else 0)
        or asked.get("parallelism")
        or 0,
        "parallelismCount": gate.active if gate else 0,
        "rateMax": pin.get("rate") or (window.rate if window else 0) or asked.get("rate") or 0,
        "rateCount": rate_count,
        "ratePeriod": pin.get("period") or period or asked.get("period") or 0,
        "ratePeriodStart": int(period_start * 1000),
        "isPaused": key in gates.paused,
        "isPinnedParallelism": "parallelism" in pin,
        "isPinnedRate": "rate" in pin or "period" in pin,
    }


def _no_params(request: Request, allowed: frozenset[str] = frozenset()) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, values in request.args.lists():
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "no parameters"
            raise bad_request(f"unknown parameter {name!r}: this call takes {known}")
        if len(values) != 1 or not values[0]:
            raise bad_request(f"{name} needs exactly one value")
        params[name] = values[0]
    return params


def list_view(server: DevServer, request: Request) -> Response:
    """``GET /v2/flowControl``: every known key, by name, optionally those containing search."""
    search = _no_params(request, frozenset({"search"})).get("search", "")

    def read(gates: Gates, tickets: list[Ticket]) -> list[dict[str, Any]]:
        keys = sorted(k for k in _known(gates) if search in k)[:MAX_LIST]
        return [_info(gates, tickets, key, time.time()) for key in keys]

    return _json(server.dispatcher.read_gates(read))


def get_view(server: DevServer, request: Request, key: str) -> Response:
    """``GET /v2/flowControl/{key}``: 404 for a key no message or call has used."""
    _no_params(request)

    def read(gates: Gates, tickets: list[Ticket]) -> dict[str, Any] | None:
        if key not in _known(gates):
            return None
        return _info(gates, tickets, key, time.time())

    info = server.dispatcher.read_gates(read)
    if info is None:
        raise APIError(404, f"flow-control key {key!r} not found")
    return _json(info)


def global_view(server: DevServer, request: Request) -> Response:
    """``GET /v2/globalParallelism``."""
    _no_params(request)
    total = server.dispatcher.read_gates(
        lambda gates, tickets: (gates.total.limit, gates.total.active)
    )
    return _json({"parallelismMax": total[0], "parallelismCount": total[1]})


def _limit(name: str, raw: str) -> int:
    if name == "period":
        try:
            number: int | None = parse_duration(raw)
        except DurationError:
            number = None
    else:
        number = ascii_int(raw)
    if number is None or not 1 <= number <= MAX_LIMIT:
        raise bad_request(f"{name} must be a whole number 1-{MAX_LIMIT}, not {raw!r}")
    return number


def _flag(name: str, raw: str) -> bool:
    if raw.lower() not in ("true", "false"):
        raise bad_request(f"{name} must be true or false, not {raw!r}")
    return raw.lower() == "true"


def _drain(gates: Gates, key: str) -> list[Ticket]:
    """Return the tickets waiting on ``key``'s gate, to be tried again under new limits."""
    gate = gates.flows.get(key)
    if gate is None:
        return []
    waiting = list(gate.waiting)
    gate.waiting.clear()
    return waiting


def act(server: DevServer, request: Request, key: str, act: str) -> Response:
    """``POST /v2/flowControl/{key}/{pause|resume|pin|unpin|resetRate}``."""
    if act in ("pause", "resume", "resetRate"):
        _no_params(request)
    if act == "pin":
        params = _no_params(request, frozenset({"parallelism", "rate", "period"}))
        if not params:
            raise bad_request("pin needs parallelism, rate and/or period")
        pin = {name: _limit(name, raw) for name, raw in params.items()}
    if act == "unpin":
        params = _no_params(request, frozenset({"parallelism", "rate"}))
        flags = {name: _flag(name, raw) for name, raw in params.items()}
        if not any(flags.values()):
            raise bad_request("unpin needs parallelism=true and/or rate=true")

    def change(gates: Gates) -> list[Ticket]:
        if act == "pause":
            gates.paused.setdefault(key, deque())
            return []
        if act == "resume":
            return list(gates.paused.pop(key, ()))
        if act == "resetRate":
            window = gates.rates.get(key)
            if window is not None:
                window.starts.clear()
            return []
        current = gates.pins.setdefault(key, {})
        if act == "pin":
            current.update(pin)
        else:
            if flags.get("parallelism"):
                current.pop("parallelism", None)
            if flags.get("rate"):
                current.pop("rate", None)
                current.pop("period", None)
        if not current:
            del gates.pins[key]
        gate = gates.flows.get(key)
        if gate is not None and "parallelism" in current:
            gate.limit = current["parallelism"]
        return _drain(gates, key)

    server.dispatcher.change_gates(change)
    return Response(status=200)
