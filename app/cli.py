"""Command groups: ``flask qstash …`` (talks to QStash) and ``flask jobs …`` (this app's jobs).

They are registered as Flask CLI plugins (``flask.commands`` entry points in
pyproject.toml) rather than on the app, so that a command which does not need a
configured app (the local dev server) runs before any signing key exists. Commands that
need the app load it themselves with ``with_appcontext``.
"""

from __future__ import annotations

import click


@click.group("qstash")
def qstash() -> None:
    """Talk to QStash (or the local dev server): schedules, queues, DLQ."""


@click.group("jobs")
def jobs() -> None:
    """Inspect and enqueue this app's jobs."""


# The dev server needs no configured app, so it hangs off the plugin group directly.
from app.devserver.cli import dev_server  # noqa: E402

qstash.add_command(dev_server)
