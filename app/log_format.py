"""Structured logging: ``LOG_FORMAT=json`` writes one JSON object per line.

Every line logged while a delivery is handled carries its ``job``, ``message_id`` and
``retried`` (read from the request, so warnings about refused deliveries carry them too),
whichever logger wrote it: the framework's, a job module's or a library's.
``gunicorn_logconfig()`` gives gunicorn's own error and access logs the same format.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import has_request_context, request
from flask.logging import default_handler

from app.errors import ConfigurationError

if TYPE_CHECKING:
    from flask import Flask

FORMATS = ("text", "json")
_CONTEXT = ("job", "message_id", "retried")


class DeliveryContext(logging.Filter):
    """Add the job, message id and attempt of the delivery being handled to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate ``record`` when it was logged inside a job endpoint's request."""
        if has_request_context() and request.blueprint == "jobs":
            headers = request.headers
            record.__dict__.setdefault("job", (request.endpoint or "").partition(".")[2])
            record.__dict__.setdefault("message_id", headers.get("Upstash-Message-Id"))
            record.__dict__.setdefault("retried", headers.get("Upstash-Retried", "0"))
        return True


class JsonFormatter(logging.Formatter):
    """Format a record as one line of JSON: time, level, logger, message and context."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the JSON line for ``record``."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _CONTEXT:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def init_app(app: Flask) -> None:
    """Send every log line to stderr as JSON when ``LOG_FORMAT=json``."""
    chosen = (app.config["LOG_FORMAT"] or "text").lower()
    if chosen not in FORMATS:
        raise ConfigurationError(f"LOG_FORMAT must be text or json, not {chosen!r}")
    if chosen != "json":
        return
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler.addFilter(DeliveryContext())
        root.addHandler(handler)
    if root.level == logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    # Flask's own stderr handler would print each app line a second time, unformatted.
    app.logger.removeHandler(default_handler)


def gunicorn_logconfig() -> dict[str, Any]:
    """Return gunicorn's ``logconfig_dict`` writing its error and access logs as JSON."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "filters": ["delivery"],
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "filters": {"delivery": {"()": DeliveryContext}},
        "handlers": {"json": handler},
        "root": {"level": "INFO", "handlers": ["json"]},
        "loggers": {
            "gunicorn.error": {"handlers": ["json"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["json"], "level": "INFO", "propagate": False},
        },
    }
