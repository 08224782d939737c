"""qstash-jobs: a Flask framework for jobs QStash delivers. Job authors import from here.

```python
from app import Delivery, NonRetryableError, RetryLater, job

@job("resize-avatar", retries=5)
def resize_avatar(payload: dict, delivery: Delivery) -> dict: ...
```

The application factory.

``create_app()`` loads the configuration (defaults → environment → ``FLASK_*`` → test
config), refuses to start a server when deliveries could not be verified, imports the job
modules and mounts their endpoints (and, under ``QSTASH_DEV=1``, the dev landing page).
Nothing job-specific lives in ``app/``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import click
from flask import Flask
from flask.cli import ScriptInfo

from app import blueprint, config, dashboard, devhome, log_format, metrics, store
from app.delivery import Delivery
from app.errors import NonRetryableError, RetryLater
from app.jobs import Job, JobRegistry, cron, job
from app.jobs import registry as default_registry
from app.receiver import with_qstash
from app.workflows import workflow

__all__ = [
    "Delivery",
    "Job",
    "NonRetryableError",
    "RetryLater",
    "create_app",
    "cron",
    "job",
    "with_qstash",
    "workflow",
]

#: The ``flask`` commands that answer deliveries. Any other one (``jobs``, ``qstash``,
#: ``shell``, ``routes``, ``--help``) loads the app without needing signing keys.
SERVING_COMMANDS = frozenset({"run", "dev"})


def serves_deliveries() -> bool:
    """Say whether this process answers deliveries: yes unless a non-serving flask command runs."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.find_object(ScriptInfo) is None:
        return True  # gunicorn, any WSGI server, a test: fail closed
    return ctx.command.name in SERVING_COMMANDS


def create_app(
    test_config: Mapping[str, Any] | None = None,
    *,
    registry: JobRegistry | None = None,
    serving: bool | None = None,
) -> Flask:
    """Create the Flask app serving every discovered job.

    ``registry`` replaces the default job registry (tests use it to mount only their own
    jobs); with the default one, the modules of ``JOBS_PACKAGES`` are imported first, and
    each module's ``init_app(app)``, if it has one, adds its extras (e.g. debug routes).
    ``serving=False`` lets signing keys and ``APP_URL`` be missing (default: whether this
    process serves deliveries, see ``serves_deliveries``); the receiver still refuses every
    delivery it cannot verify.
    """
    app = Flask(__name__, instance_relative_config=True)
    config.load(app, test_config)
    config.check(app, serving=serves_deliveries() if serving is None else serving)
    log_format.init_app(app)
    if registry is None:
        registry = default_registry
        for name in registry.discover(app.config["JOBS_PACKAGES"]):
            init_module = getattr(sys.modules[name], "init_app", None)
            if callable(init_module):
                init_module(app)
    blueprint.init_app(app, registry)
    store.init_app(app)
    metrics.init_app(app)
    dashboard.init_app(app)
    if app.config["QSTASH_DEV"]:
        devhome.init_app(app)
    return app
