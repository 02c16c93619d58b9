"""The Flask application: configuration, shared services, error handling, auth and the blueprints."""

from __future__ import annotations

import logging
from importlib import metadata

import redis
from flask import Flask

from api import auth, dashboard
from api.envelope import Blueprint, QbmApi, error_response, handle_unexpected, start_timer
from shared.adapters.qdrant import QdrantError, QdrantUnavailable
from shared.adapters.secret_box import SecretKeyError
from shared.intake.submit import Enqueue
from shared.records.job_store import JobNotFound
from shared.records.storage_configs import StorageConfigNotFound
from shared.runtime.config import Config
from shared.services import Services

log = logging.getLogger("qbm.api")

API_PREFIX = "/api/v1"

def version() -> str:
    try:
        return metadata.version("qdrant-backup-manager")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def create_app(config: Config, *, enqueue: Enqueue | None = None) -> Flask:
    """Build the API for ``config``.

    ``enqueue`` hands a stored job id to the workers; it defaults to
    the workers' queues (:class:`shared.services.Services`) and is a parameter so tests can observe the hand-off.
    Nothing here connects yet: Redis and Qdrant are reached per request, so the API starts (and answers
    /healthz, /readyz) even while they are down.
    """
    app = Flask("qbm")
    app.config.update(
        API_TITLE="Qdrant Backup Manager",
        API_VERSION=version(),
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=dashboard.SWAGGER_UI_URL,  # served from the package, no CDN
        OPENAPI_SWAGGER_UI_CONFIG={"validatorUrl": None},  # else Swagger UI asks validator.swagger.io
        API_SPEC_OPTIONS={
            "info": {
                "description": (
                    "REST API for managing Qdrant vector database backups: cluster monitoring, collection "
                    "management, snapshot operations, storage configuration and job tracking. Successful "
                    "answers are {status: 'ok', time, result} (GET /api/v1/jobs answers its page bare); "
                    "errors are Qdrant's envelope {status: {error}, time}."
                ),
            },
        },
        MAX_CONTENT_LENGTH=1024 * 1024,  # JSON bodies only; snapshots are never uploaded through the API
    )
    app.json.sort_keys = False  # keep "status", "time", "result" in the contract's order

    app.extensions["qbm"] = Services(config, enqueue=enqueue, interactive=True)

    app.before_request(start_timer)
    app.before_request(auth.check_request)

    api = QbmApi(app)
    auth.document(api.spec, enabled=config.auth_enabled)
    _register_error_handlers(app)

    from api import backups, cluster, collections, health, jobs, metrics, schedules, storage

    api.register_blueprint(health.blp)
    api.register_blueprint(metrics.blp)
    blueprints: tuple[Blueprint, ...] = (cluster.blp, collections.blp, storage.blp, jobs.blp, schedules.blp,
                                         backups.blp)
    for blp in blueprints:
        api.register_blueprint(blp, url_prefix=API_PREFIX)
    dashboard.register(app)
    return app


def _register_error_handlers(app: Flask) -> None:
    """Errors of our collaborators, mapped once for every view (HTTP errors go through QbmApi)."""

    @app.errorhandler(QdrantError)
    def qdrant_error(error: QdrantError) -> object:
        status = getattr(error, "status", None)
        message = getattr(error, "message", None) or str(error)
        if isinstance(error, QdrantUnavailable) or status is None:
            return error_response(503, f"Qdrant is not reachable: {message}")
        if status in (400, 404, 422):
            return error_response(status, message)
        return error_response(502, f"Qdrant answered {status}: {message}")

    @app.errorhandler(redis.ConnectionError)
    @app.errorhandler(redis.TimeoutError)
    def redis_down(error: redis.RedisError) -> object:
        log.warning("Redis is not reachable: %s", error)
        return error_response(503, "Redis is not reachable; try again later")

    @app.errorhandler(JobNotFound)
    def job_not_found(error: JobNotFound) -> object:
        return error_response(404, f"job {error.job_id} not found")

    @app.errorhandler(StorageConfigNotFound)
    def storage_not_found(error: StorageConfigNotFound) -> object:
        return error_response(404, f"storage backend {error.storage_id} not found")

    @app.errorhandler(SecretKeyError)
    def secret_key_problem(error: SecretKeyError) -> object:
        # The request is fine; this server lacks (the right) QBM_SECRET_KEY. Only the operator can fix that,
        # so it is a 503 naming the variable, not a 4xx that would blame the caller.
        log.error("%s", error)
        return error_response(503, str(error))

    app.register_error_handler(Exception, handle_unexpected)
