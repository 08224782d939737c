"""The delivery loop: due messages → gates → signed HTTP calls → outcome → store.

One dispatcher thread keeps a heap of due times; a due message starts when its gates
(``gates.py``) allow and runs on a bounded thread pool. Each attempt is signed exactly as
QStash signs (``app.qstash.signature.sign``, ``sub`` = destination URL) and carries
QStash's headers; its outcome is committed to the store before anything else happens:

| endpoint answer                                | next                                    |
|------------------------------------------------|-----------------------------------------|
| 2xx                                            | delivered (message forgotten)           |
| 489 + ``Upstash-NonRetryable-Error: true``     | DLQ at once + failure callback          |
| anything else, timeout, connection error       | retry after Retry-After / retry-delay / |
|                                                | default backoff; DLQ when exhausted     |

Every attempt also posts the ``Upstash-Callback`` message and is reported to listeners
(the CLI prints one line per attempt).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from app.devserver import callbacks
from app.devserver.callbacks import Response
from app.devserver.delivered_log import DeliveredLog
from app.devserver.events import EventLog
from app.devserver.gates import Gate, Gates, Ticket
from app.devserver.publish import Clock
from app.devserver.records import Attempt, Message
from app.devserver.store import Store
from app.devserver.transport import Transport
from app.qstash.redact import redact_url
from app.qstash.signature import sign
from app.qstash.timing import retry_after_seconds, retry_delay_seconds

log = logging.getLogger(__name__)
T = TypeVar("T")

NON_RETRYABLE_STATUS = 489
#: Never sent from ``Upstash-Forward-*`` (or a callback's ``-Forward-``): the framing and
#: routing of the dev server's own request, which it computes for the body and URL it sends
#: (a forwarded ``Content-Length: 7`` cut an 8-byte body, and its signature then failed), and
#: the hop-by-hop fields of RFC 9110 §7.6.1, which describe the publisher's connection.
NOT_FORWARDED = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    }
)
#: Longest a delivery may take without ``Upstash-Timeout`` (QStash's paid-plan maximum).
DEFAULT_TIMEOUT = 2 * 3600


@dataclass(frozen=True, slots=True)
class AttemptEvent:
    """One finished delivery attempt, as reported to listeners."""

    message: Message
    response: Response
    latency_ms: float
    outcome: str  # "delivered", "retry", "dlq"
    retry_in: float | None = None
    dlq_id: str | None = None

    def line(self) -> str:
        """Return the one-line log of this attempt."""
        spec = self.message.spec
        status = self.response.status if self.response.status is not None else self.response.error
        attempt = f"{self.message.retried + 1}/{spec['retries'] + 1}"
        text = (
            f"{self.message.id} {spec['method']} {redact_url(spec['url'])} attempt {attempt}"
            f" → {status} in {self.latency_ms:.0f} ms: {self.outcome}"
        )
        if self.retry_in is not None:
            text += f" (next in {self.retry_in:.1f}s)"
        if self.dlq_id is not None:
            text += f" ({self.dlq_id})"
        return text


Listener = Callable[[AttemptEvent], None]


def ticket_for(message: Message) -> Ticket:
    """Return the dispatcher's handle for ``message``."""
    spec = message.spec
    return Ticket(message, message.due, spec["url"], spec.get("queueName"), spec["flowControl"])


class Dispatcher:
    """Delivers stored messages when due, with bounded and fair concurrency."""

    def __init__(
        self,
        store: Store,
        *,
        signing_key: str,
        concurrency: int = 32,
        per_destination: int | None = None,
        time_scale: float = 1.0,
        default_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.store = store
        self.signing_key = signing_key
        self.time_scale = time_scale
        self.default_timeout = default_timeout
        self.listeners: list[Listener] = []
        self.gates = Gates(
            concurrency=concurrency,
            per_destination=per_destination or max(1, concurrency // 2),
            time_scale=time_scale,
        )
        self._heap: list[tuple[float, int, Ticket]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="qstash-delivery")
        self._http = Transport(keep=self.gates.per_destination)
        self._cancelled: set[str] = set()
        self.delivered_log = DeliveredLog(store)
        self.events = EventLog(store)
        self._thread = threading.Thread(target=self._loop, name="qstash-dispatcher", daemon=True)

    def clock(self) -> Clock:
        """Return the current time and time scale."""
        return Clock(time.time(), self.time_scale)

    def start(self) -> None:
        """Load the queues and the unfinished messages from the store, then start delivering."""
        for queue in self.store.queues():
            self.gates.set_queue_limit(queue.name, 0 if queue.paused else queue.parallelism)
        self.push(self.store.pending())
        self.delivered_log.start()
        self.events.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop starting deliveries, let running ones finish, release the HTTP pool."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.delivered_log.stop()
        self.events.stop()
        self._http.close()

    def push(self, messages: list[Message]) -> None:
        """Schedule stored messages for delivery at their due time."""
        with self._cond:
            for message in messages:
                ticket = ticket_for(message)
                heapq.heappush(self._heap, (ticket.due, next(self._seq), ticket))
            self._cond.notify()

    def cancel(self, message_ids: list[str]) -> None:
        """Forget cancelled messages that still wait in memory."""
        with self._cond:
            self._cancelled.update(message_ids)

    def set_queue(self, name: str, parallelism: int, paused: bool) -> None:
        """Apply a queue's new parallelism or pause state to waiting deliveries."""
        with self._cond:
            gate = self.gates.set_queue_limit(name, 0 if paused else parallelism)
            self._release(gate)

    def change_gates(self, change: Callable[[Gates], list[Ticket]]) -> None:
        """Run ``change`` on the gates under the lock; start the tickets it hands back."""
        with self._cond:
            for ticket in change(self.gates):
                self._try_start(ticket, time.time())
            self._cond.notify()

    def read_gates(self, read: Callable[[Gates, list[Ticket]], T]) -> T:
        """Return ``read(gates, tickets in the heap)`` under the lock."""
        with self._cond:
            return read(self.gates, [entry[2] for entry in self._heap])

    # -- the loop (all under self._cond) ------------------------------------------------

    def _loop(self) -> None:
        with self._cond:
            while not self._stopping:
                now = time.time()
                while self._heap and self._heap[0][0] <= now:
                    self._try_start(heapq.heappop(self._heap)[2], now)
                wait = self._heap[0][0] - now if self._heap else 1.0
                self._cond.wait(min(max(wait, 0.0), 1.0))

    def _try_start(self, ticket: Ticket, now: float) -> None:
        gates = self._admit(ticket, now)
        if gates is not None:
            self._pool.submit(self._run, ticket, gates)

    def _admit(self, ticket: Ticket, now: float) -> list[Gate] | None:
        """Take ``ticket``'s slots and return its gates if it may start now; else park it
        (in a gate's line, a paused key's hold, or the heap until its rate allows)."""
        if ticket.id in self._cancelled:
            self._cancelled.discard(ticket.id)
            return None
        if self.gates.hold(ticket):  # its flow-control key is paused
            return None
        gates = self.gates.for_ticket(ticket)
        for gate in gates:
            if gate.full:
                gate.waiting.append(ticket)
                return None
        later = self.gates.rate_wait(ticket, now)
        if later is not None:
            heapq.heappush(self._heap, (later, next(self._seq), ticket))
            if self._heap[0][2] is ticket:
                self._cond.notify()  # the loop now has an earlier time to wait for
            return None
        for gate in gates:
            gate.active += 1
        return gates

    def _release(self, gate: Gate) -> None:
        while gate.waiting and not gate.full:
            self._try_start(gate.waiting.popleft(), time.time())

    def _finish(self, gates: list[Gate]) -> tuple[Ticket, list[Gate]] | None:
        """Free ``gates``' slots and start what waited for them: the first one is handed
        back for the finishing thread to run itself, the others go to the pool."""
        following: tuple[Ticket, list[Gate]] | None = None
        with self._cond:
            for gate in gates:
                gate.active -= 1
            if self._stopping:
                return None
            now = time.time()
            for gate in gates:
                while gate.waiting and not gate.full:
                    ticket = gate.waiting.popleft()
                    admitted = self._admit(ticket, now)
                    if admitted is None:
                        continue
                    if following is None:
                        following = (ticket, admitted)
                    else:
                        self._pool.submit(self._run, ticket, admitted)
        return following

    # -- attempts (on a pool thread) ----------------------------------------------------

    def _run(self, ticket: Ticket, gates: list[Gate]) -> None:
        # One thread delivers one message after another while messages wait for the slots
        # it frees: no hand-over to another thread per delivery.
        following: tuple[Ticket, list[Gate]] | None = (ticket, gates)
        while following is not None:
            ticket, gates = following
            try:
                self.events.record(ticket.message, "ACTIVE")
                self._settle(ticket.message, *self._call(ticket.message))
            except Exception:  # a bug here must not kill the pool thread silently
                log.exception("delivery of %s failed inside the dev server", ticket.id)
            following = self._finish(gates)

    def _call(self, message: Message) -> tuple[Response, float]:
        spec = message.spec
        headers = self._headers(message)
        timeout = float(spec.get("timeout") or self.default_timeout)
        started = time.monotonic()
        response = self._http.request(
            spec["method"], spec["url"], body=message.body, headers=headers, timeout=timeout
        )
        return response, (time.monotonic() - started) * 1000

    def _headers(self, message: Message) -> dict[str, str]:
        spec = message.spec
        headers = {k: v for k, v in spec["headers"].items() if k.lower() not in NOT_FORWARDED}
        headers.update(
            {
                "Upstash-Signature": sign(message.body, url=spec["url"], key=self.signing_key),
                "Upstash-Message-Id": message.id,
                "Upstash-Retried": str(message.retried),
                "User-Agent": "Upstash-QStash",
            }
        )
        if spec.get("callerIP"):
            headers["Upstash-Caller-Ip"] = spec["callerIP"]
        if spec.get("scheduleId"):
            headers["Upstash-Schedule-Id"] = spec["scheduleId"]
        return headers

    def _settle(self, message: Message, response: Response, latency_ms: float) -> None:
        spec, now = message.spec, time.time()
        attempt = Attempt(message.retried, response.status, response.error, latency_ms, now)
        if response.status is not None and 200 <= response.status < 300:
            self.delivered_log.add(message.id, attempt)
            self.events.record(message, "DELIVERED", response=response)
            event = AttemptEvent(message, response, latency_ms, "delivered")
        elif _non_retryable(response) or message.retried >= spec["retries"]:
            event = self._dead_letter(message, response, attempt)
        else:
            wait = self._retry_wait(message, response, now)
            due = now + wait * self.time_scale
            self.store.reschedule(message.id, attempt, retried=message.retried + 1, due=due)
            self.push([Message(message.id, spec, message.body, message.retried + 1, due)])
            self.events.record(message, "ERROR", response=response)
            self.events.record(message, "RETRY", next_delivery=due)
            event = AttemptEvent(message, response, latency_ms, "retry", retry_in=wait)
        if spec.get("callback"):
            self._post_callback(message, spec["callback"], response, failure=False)
        self._emit(event)

    def _dead_letter(self, message: Message, response: Response, attempt: Attempt) -> AttemptEvent:
        # With no HTTP answer, the entry's responseBody says why: refused, unresolvable, timeout.
        body = response.body if response.status is not None else (response.error or "").encode()
        dlq_id = self.store.dead_letter(message, attempt, headers=response.headers, body=body)
        self.events.record(message, "ERROR", response=response)
        self.events.record(message, "FAILED", response=response)
        if message.spec.get("failureCallback"):
            self._post_callback(
                message, message.spec["failureCallback"], response, failure=True, dlq_id=dlq_id
            )
        return AttemptEvent(message, response, attempt.latency_ms, "dlq", dlq_id=dlq_id)

    def _retry_wait(self, message: Message, response: Response, now: float) -> float:
        first = header(response.headers, "Retry-After")
        reset = header(response.headers, "X-RateLimit-Reset")
        asked = retry_after_seconds(first, reset, now)
        if asked is not None:
            return asked
        return retry_delay_seconds(message.spec.get("retryDelay"), message.retried)

    def _post_callback(
        self,
        message: Message,
        url: str,
        response: Response,
        *,
        failure: bool,
        dlq_id: str | None = None,
    ) -> None:
        body = callbacks.callback_body(message, response, dlq_id=dlq_id)
        callback = callbacks.callback_message(
            message, url, body, failure=failure, clock=self.clock()
        )
        self.store.publish([(callback, None)], now=time.time(), window=0)
        self.events.created([callback])
        self.push([callback])

    def _emit(self, event: AttemptEvent) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("attempt listener failed")


def _non_retryable(response: Response) -> bool:
    flag = header(response.headers, "Upstash-NonRetryable-Error") or ""
    return response.status == NON_RETRYABLE_STATUS and flag.strip().lower() == "true"


def header(headers: dict[str, list[str]], name: str) -> str | None:
    """Return the first value of ``name`` in a name → values mapping, ignoring case."""
    wanted = name.lower()
    for key, values in headers.items():
        if key.lower() == wanted and values:
            return values[0]
    return None
