"""The blueprint that mounts every registered job at ``POST /api/jobs/<name>``.

Also answers ``GET /healthz`` (and, when the app declares a workflow,
``POST /api/workflows/events/<id>``: ``app.workflows.endpoints``) and turns HTTP errors
under ``/api/`` (unknown job, wrong method) into the framework's JSON errors instead of
Flask's HTML pages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from app import config as app_config
from app.answers import error_response
from app.jobs import URL_PREFIX, JobRegistry
from app.receiver import with_qstash
from app.workflows import Workflow, endpoints

if TYPE_CHECKING:
    from flask import Flask


def create_blueprint(registry: JobRegistry) -> Blueprint:
    """Return a blueprint with one guarded ``POST`` endpoint per job in ``registry``."""
    bp = Blueprint("jobs", __name__, url_prefix=URL_PREFIX)
    for job in registry:
        view = with_qstash(schema=job.schema, job=job.name)(job.handler)
        bp.add_url_rule(f"/{job.name}", endpoint=job.name, view_func=view, methods=["POST"])
    return bp


def healthz() -> Response:
    """Say whether the app is ready to take deliveries, without revealing secrets."""
    registry: JobRegistry = current_app.extensions["qstash_jobs"]
    return jsonify(
        status="ok",
        jobs=[job.name for job in registry],
        signing=app_config.signing_mode(current_app.config),
    )


def _json_http_error(exc: HTTPException) -> Response | HTTPException:
    if not request.path.startswith("/api/"):
        return exc
    code = (exc.name or "error").lower().replace(" ", "_")
    response = error_response(exc.code or 500, code, exc.description or exc.name)
    for name, value in exc.get_headers():
        if name == "Allow":  # 405 says which methods exist
            response.headers[name] = value
    return response


def init_app(app: Flask, registry: JobRegistry) -> None:
    """Mount the jobs, the health check and the JSON error handlers on ``app``."""
    app.extensions["qstash_jobs"] = registry
    app.register_blueprint(create_blueprint(registry))
    # Only an app that declares a workflow has runs to resume: no extra endpoint otherwise.
    if any(isinstance(job, Workflow) for job in registry):
        endpoints.init_app(app)
    app.add_url_rule("/healthz", "healthz", healthz, methods=["GET"])
    app.register_error_handler(HTTPException, _json_http_error)
