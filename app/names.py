"""Job names and the URLs they live at: the one rule the registry and publishing share.

A job name is a URL path segment (lower-case words joined by single hyphens) and the job
answers at ``URL_PREFIX/<name>``. Kept apart from ``app.jobs`` so that publishing
(``app.publishing``), which ``Job.enqueue`` calls, needs nothing from the registry.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["NAME_LIMIT", "NAME_PATTERN", "URL_PREFIX", "is_job_name", "job_path"]

#: Job names are URL path segments: lower-case words joined by single hyphens.
NAME_PATTERN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
#: The longest job name: the width of the store's ``job`` columns.
NAME_LIMIT = 100
URL_PREFIX = "/api/jobs"


def is_job_name(value: Any) -> bool:
    """Say whether ``value`` is a valid job name."""
    return (
        isinstance(value, str) and len(value) <= NAME_LIMIT and bool(NAME_PATTERN.fullmatch(value))
    )


def job_path(name: str) -> str:
    """Return the URL path, relative to ``APP_URL``, that the job ``name`` answers at."""
    return f"{URL_PREFIX}/{name}"
