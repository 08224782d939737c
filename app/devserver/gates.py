"""Concurrency gates of the delivery loop: global, per destination, queue, flow control.

A due message starts only when every gate it passes through has a free slot; otherwise it
waits, in order, in the first full gate's line and is looked at again as soon as that gate
frees a slot. Rate limits (flow control ``rate`` per ``period``) push the message back to
the time the window has room again. Nothing here does I/O; the dispatcher holds the lock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from app.devserver.records import Message


@dataclass(slots=True)
class Ticket:
    """A pending message in memory, with what decides when it may start."""

    message: Message
    due: float
    url: str
    queue: str | None = None
    flow: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        """The message id."""
        return self.message.id


@dataclass(eq=False, slots=True)
class Gate:
    """At most ``limit`` deliveries at once; the others wait in line."""

    limit: int
    active: int = 0
    waiting: deque[Ticket] = field(default_factory=deque)

    @property
    def full(self) -> bool:
        """Say whether a new delivery must wait."""
        return self.active >= self.limit


@dataclass(slots=True)
class RateWindow:
    """At most ``rate`` starts in any ``period`` seconds (a sliding window)."""

    rate: int
    period: float
    starts: deque[float] = field(default_factory=deque)

    def next_slot(self, now: float) -> float | None:
        """Return when the next start is allowed, or None if it is allowed now."""
        while self.starts and self.starts[0] <= now - self.period:
            self.starts.popleft()
        return None if len(self.starts) < self.rate else self.starts[0] + self.period

    def record(self, now: float) -> None:
        """Count a start at ``now``."""
        self.starts.append(now)


def destination_key(url: str) -> str:
    """Return what counts as one endpoint for fairness: the URL without its query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class Gates:
    """Every gate of the dev server, created on first use."""

    def __init__(self, *, concurrency: int, per_destination: int, time_scale: float) -> None:
        self.total = Gate(concurrency)
        self.per_destination = per_destination
        self.time_scale = time_scale
        self.destinations: dict[str, Gate] = {}
        self.queues: dict[str, Gate] = {}
        self.flows: dict[str, Gate] = {}
        self.rates: dict[str, RateWindow] = {}
        self.queue_limits: dict[str, int] = {}
        #: Flow-control keys paused through the API, each holding its due tickets in order.
        self.paused: dict[str, deque[Ticket]] = {}
        #: Limits pinned through the API: they win over what incoming messages carry.
        self.pins: dict[str, dict[str, int]] = {}

    def pinned(self, flow: dict[str, Any] | None) -> dict[str, Any] | None:
        """Return a message's flow control with the key's pinned limits laid over it."""
        pin = self.pins.get(flow["key"]) if flow is not None else None
        return {**flow, **pin} if flow is not None and pin else flow

    def hold(self, ticket: Ticket) -> bool:
        """Hold ``ticket`` if its flow-control key is paused; say whether it was held."""
        flow = ticket.flow
        if flow is None or flow["key"] not in self.paused:
            return False
        self.paused[flow["key"]].append(ticket)
        return True

    def for_ticket(self, ticket: Ticket) -> list[Gate]:
        """Return the gates ``ticket`` must pass, outermost (queue order) first."""
        gates: list[Gate] = []
        if ticket.queue is not None:
            limit = self.queue_limits.get(ticket.queue, 1)
            gates.append(self.queues.setdefault(ticket.queue, Gate(limit)))
        flow = self.pinned(ticket.flow)
        if flow is not None and flow.get("parallelism"):
            gate = self.flows.setdefault(flow["key"], Gate(flow["parallelism"]))
            gate.limit = flow["parallelism"]  # the latest message's value wins, as in QStash
            gates.append(gate)
        key = destination_key(ticket.url)
        gates.append(self.destinations.setdefault(key, Gate(self.per_destination)))
        gates.append(self.total)
        return gates

    def rate_wait(self, ticket: Ticket, now: float) -> float | None:
        """Return when a rate-limited ``ticket`` may start, or None (and count the start)."""
        flow = self.pinned(ticket.flow)
        if flow is None or not flow.get("rate"):
            return None
        period = float(flow.get("period") or 1) * self.time_scale
        window = self.rates.setdefault(flow["key"], RateWindow(flow["rate"], period))
        window.rate, window.period = flow["rate"], period
        later = window.next_slot(now)
        if later is None:
            window.record(now)
        return later

    def set_queue_limit(self, name: str, limit: int) -> Gate:
        """Change a queue's parallelism (0 while paused) and return its gate."""
        self.queue_limits[name] = limit
        gate = self.queues.setdefault(name, Gate(limit))
        gate.limit = limit
        return gate
