"""Turn a publish request (destination, headers, body) into a stored message spec.

Every ``Upstash-*`` publish header of QSTASH_PROTOCOL.md §5 is validated here, so bad input
is refused with QStash's ``400 {"error": …}`` at publish time instead of failing later in
the delivery loop. The spec is a JSON-able dict in QStash's own field names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from app.devserver import redaction
from app.devserver.records import Message, new_id
from app.qstash import retry_delay
from app.qstash.timing import MAX_DURATION, DurationError, parse_duration

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
DEFAULT_RETRIES = 3
MAX_RETRIES = 100
FORWARD_PREFIX = "upstash-forward-"
_FLOW_PART = re.compile(r"\s*(parallelism|rate|period)\s*=\s*([0-9a-z]+)\s*")
#: RFC 9110: a field name is a token; a value is visible Latin-1 text, spaces and tabs.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


#: Longest error message: they quote the input, which may be megabytes long.
MAX_ERROR = 500


class APIError(Exception):
    """A request the API refuses: QStash's status code and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        if len(message) > MAX_ERROR:
            message = message[: MAX_ERROR - 3] + "..."
        super().__init__(message)
        self.status = status
        self.message = message


class PublishHeaders:
    """A publish request's headers: case-insensitive lookups, original names kept.

    A plain dict underneath: werkzeug's ``Headers.get`` raises and catches an exception
    for every absent name, and a publish asks for a dozen mostly absent ones.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.pairs = list(pairs)
        self._lower = {name.lower(): value for name, value in self.pairs}

    def get(self, name: str) -> str | None:
        """Return the value of ``name`` (any case), or None."""
        return self._lower.get(name.lower())

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._lower

    def __getitem__(self, name: str) -> str:
        return self._lower[name.lower()]

    def items(self) -> list[tuple[str, str]]:
        """Return the (name, value) pairs as sent."""
        return self.pairs


def bad_request(message: str) -> APIError:
    """Return a 400 ``APIError``."""
    return APIError(400, message)


@dataclass(frozen=True, slots=True)
class Clock:
    """Real time and the factor that compresses every wait (``--time-scale``)."""

    now: float
    scale: float

    def after(self, seconds: float) -> float:
        """Return the due time ``seconds`` (QStash time) from now."""
        return self.now + max(0.0, seconds) * self.scale


#: What a destination URL cannot hold: ``\s`` is what ``str.isspace`` calls whitespace.
_NOT_IN_URL = re.compile(r"[\s\x00-\x1f]")


def _url_problem(url: str) -> str | None:
    """Return why ``url`` is not an absolute http(s) URL one can send to, or None."""
    if _NOT_IN_URL.search(url):
        return "whitespace or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsed for its ValueError: a port past 65535 or not a number
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    if not parts.hostname:
        return "no host"
    return None


def check_destination(destination: str) -> str:
    """Return ``destination`` if it is an absolute http(s) URL; raise ``APIError`` if not."""
    if "://" not in destination and not _url_problem("http://" + destination):
        # A bare name is a URL group: publish, enqueue and batch expand it (groups.py) before
        # this; what else reaches here (a schedule) the dev server does not do.
        raise APIError(
            501, f"{destination!r} is a URL group: the dev server has no schedules to URL groups"
        )
    problem = _url_problem(destination)
    if problem is not None:
        raise bad_request(f"invalid destination url {destination!r}: {problem}")
    return destination


def ascii_int(raw: str) -> int | None:
    """Return ``raw`` (spaces around allowed) as a non-negative integer, or None.

    ``str.isdigit`` alone also accepts ``²`` and ``٣``, which ``int()`` then refuses.
    """
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 30:
        return None
    return int(raw)


def header_pairs(headers: dict[str, Any]) -> list[tuple[str, str]]:
    """Return a JSON object of headers as (name, value) pairs; 400 unless values are text."""
    for name, value in headers.items():
        if not isinstance(value, str):
            raise bad_request(f"header {name}: the value must be a string, not {value!r}")
    return list(headers.items())


def check_fields(headers: PublishHeaders) -> None:
    """Refuse headers no HTTP message may carry, as QStash's HTTP server does (400)."""
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise bad_request(f"header name {name!r} is not an HTTP token")
        if not _HEADER_VALUE.fullmatch(value):
            raise bad_request(
                f"header {name}: the value must be Latin-1 text without control characters,"
                f" not {value!r}"
            )


def _int_header(headers: PublishHeaders, name: str, low: int, high: int) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    number = ascii_int(raw)
    if number is None or not low <= number <= high:
        raise bad_request(f"invalid {name} header {raw!r}: expected an integer {low}-{high}")
    return number


def duration_header(headers: PublishHeaders, name: str) -> int | None:
    """Return the seconds of the duration header ``name``, None if absent; 400 if invalid."""
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return parse_duration(raw, bare_seconds=False)
    except DurationError as exc:
        raise bad_request(f"invalid {name} header: {exc}") from None


def _url_header(headers: PublishHeaders, name: str) -> str | None:
    raw = headers.get(name)
    if raw is None:
        return None
    problem = _url_problem(raw.strip())
    if problem is not None:
        raise bad_request(f"invalid {name} header {raw!r}: expected an http(s) URL ({problem})")
    return raw.strip()


def parse_flow_control(key: str | None, value: str | None) -> dict[str, Any] | None:
    """Parse ``Upstash-Flow-Control-Key/-Value`` into ``{key, parallelism, rate, period}``."""
    if key is None:
        if value is not None:
            raise bad_request("Upstash-Flow-Control-Value needs Upstash-Flow-Control-Key")
        return None
    if not key.strip() or len(key) > 200:
        raise bad_request("Upstash-Flow-Control-Key must be 1-200 characters")
    control: dict[str, Any] = {"key": key.strip(), "parallelism": None, "rate": None, "period": 1}
    for part in (value or "").split(","):
        if not part.strip():
            continue
        match = _FLOW_PART.fullmatch(part.lower())
        if match is None:
            raise bad_request(f"invalid Upstash-Flow-Control-Value part {part.strip()!r}")
        name, raw = match.groups()
        try:
            number = parse_duration(raw) if name == "period" else int(raw)
        except (DurationError, ValueError):
            raise bad_request(f"invalid {name} in Upstash-Flow-Control-Value: {raw!r}") from None
        if number < 1:
            raise bad_request(f"{name} in Upstash-Flow-Control-Value must be at least 1")
        control[name] = number
    if control["parallelism"] is None and control["rate"] is None:
        raise bad_request("Upstash-Flow-Control-Value needs parallelism and/or rate")
    return control


def _sub_headers(headers: PublishHeaders, prefix: str) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.lower().startswith(prefix)}


def forwarded_headers(headers: PublishHeaders) -> dict[str, str]:
    """Return the headers the destination receives: ``Upstash-Forward-X`` as ``X``."""
    result = {}
    for name, value in headers.items():
        if name.lower().startswith(FORWARD_PREFIX) and len(name) > len(FORWARD_PREFIX):
            result[name[len(FORWARD_PREFIX) :]] = value
    if headers.get("Content-Type"):
        result["Content-Type"] = headers["Content-Type"]
    return result


def workflow_fields(headers: PublishHeaders, destination: str) -> dict[str, Any] | None:
    """Return an Upstash Workflow message's run fields (``workflows.py``), None if plain."""
    run_id = (headers.get("Upstash-Workflow-RunId") or "").strip()
    if not run_id:
        return None
    return {
        "runId": run_id,
        "url": (headers.get("Upstash-Workflow-Url") or destination).strip(),
        "init": (headers.get("Upstash-Workflow-Init") or "").strip().lower() == "true",
        "callType": (headers.get("Upstash-Workflow-CallType") or "step").strip(),
    }


def build_spec(
    destination: str, headers: PublishHeaders, *, caller_ip: str, now: float
) -> dict[str, Any]:
    """Validate the publish headers for ``destination`` and return the message spec."""
    check_destination(destination)
    check_fields(headers)
    method = (headers.get("Upstash-Method") or "POST").strip().upper()
    if method not in METHODS:
        raise bad_request(f"invalid Upstash-Method {method!r}: one of {', '.join(sorted(METHODS))}")
    expression = headers.get("Upstash-Retry-Delay")
    if expression is not None:
        try:
            retry_delay.parse(expression)
        except retry_delay.RetryDelayError as exc:
            raise bad_request(f"invalid Upstash-Retry-Delay: {exc}") from None
    retries = _int_header(headers, "Upstash-Retries", 0, MAX_RETRIES)
    spec: dict[str, Any] = {
        "url": destination,
        "method": method,
        "headers": forwarded_headers(headers),
        "retries": DEFAULT_RETRIES if retries is None else retries,
        "retryDelay": expression,
        "timeout": duration_header(headers, "Upstash-Timeout"),
        "callback": _url_header(headers, "Upstash-Callback"),
        "failureCallback": _url_header(headers, "Upstash-Failure-Callback"),
        "callbackHeaders": _sub_headers(headers, "upstash-callback-"),
        "failureCallbackHeaders": _sub_headers(headers, "upstash-failure-callback-"),
        "flowControl": parse_flow_control(
            headers.get("Upstash-Flow-Control-Key"), headers.get("Upstash-Flow-Control-Value")
        ),
        "label": headers.get("Upstash-Label"),
        "queueName": None,
        "scheduleId": None,
        "callerIP": caller_ip,
        "createdAt": int(now * 1000),
        "notBefore": 0,
    }
    workflow = workflow_fields(headers, destination)
    if workflow is not None:
        spec["workflow"] = workflow
    try:
        redact = redaction.parse(headers.get(redaction.HEADER))
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    if redact is not None:
        spec["redact"] = redact
    return spec


def due_time(headers: PublishHeaders, clock: Clock) -> float:
    """Return when the first attempt is due: ``Upstash-Not-Before`` wins over the delay."""
    not_before = headers.get("Upstash-Not-Before")
    delay = duration_header(headers, "Upstash-Delay")
    if not_before is not None:
        seconds = ascii_int(not_before)
        if seconds is None or seconds - clock.now > MAX_DURATION:
            raise bad_request(
                f"invalid Upstash-Not-Before {not_before!r}: expected unix seconds"
                f" at most {MAX_DURATION} s from now"
            )
        return clock.after(seconds - clock.now)
    return clock.after(delay or 0)


def dedup_key(spec: dict[str, Any], headers: PublishHeaders, body: bytes) -> str | None:
    """Return the deduplication key of a publish, or None when it asks for none."""
    explicit = headers.get("Upstash-Deduplication-Id")
    if explicit is not None:
        if not explicit.strip():
            raise bad_request("Upstash-Deduplication-Id must not be empty")
        return "id:" + explicit
    flag = (headers.get("Upstash-Content-Based-Deduplication") or "").strip().lower()
    if flag != "true":
        return None
    digest = hashlib.sha256()
    for part in (spec["url"], spec["method"], sorted(spec["headers"].items()), body):
        digest.update(repr(part).encode() if not isinstance(part, bytes) else part)
        digest.update(b"\0")
    return "content:" + digest.hexdigest()


def new_message(
    destination: str,
    headers: PublishHeaders,
    body: bytes,
    *,
    clock: Clock,
    caller_ip: str,
    queue: str | None = None,
) -> tuple[Message, str | None]:
    """Validate one publish and return the message plus its dedup key."""
    spec = build_spec(destination, headers, caller_ip=caller_ip, now=clock.now)
    spec["queueName"] = queue
    due = due_time(headers, clock)
    spec["notBefore"] = int(due * 1000)
    return Message(new_id("msg"), spec, body, 0, due), dedup_key(spec, headers, body)
