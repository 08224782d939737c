"""The workflows a gunicorn serving the dashboard's browser test declares
(``JOBS_PACKAGES=tests.workflows.browser_flows``). Never imported by the test process."""

from __future__ import annotations

from app.jobs import registry
from tests.workflows.runs import declare

declare(registry)
