"""The WSGI entry point: ``gunicorn wsgi:app`` or ``flask --app wsgi …``."""

import sys

from app import create_app
from app.errors import ConfigurationError

try:
    app = create_app()
except ConfigurationError as exc:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    # 4 is gunicorn's APP_LOAD_ERROR: the arbiter halts instead of respawning the worker.
    raise SystemExit(4) from None
