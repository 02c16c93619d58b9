"""Probes: /healthz says the process is up, /readyz says it can do its work (Redis and Qdrant answer, Qdrant
with QBM's API key accepted).

Both stay open when API keys are configured: orchestrators probe without credentials.
"""

from __future__ import annotations

import redis
from flask import Response, jsonify

from api.envelope import Blueprint, elapsed
from api.schemas.health import LivenessSchema, NotReadySchema, ReadinessSchema
from api.services import services
from shared.adapters.qdrant import QdrantError

blp = Blueprint("health", __name__, description="Liveness and readiness probes (no API key needed)")


@blp.route("/healthz")
@blp.doc(security=[])
@blp.response(200, LivenessSchema)
def healthz() -> dict:
    """The process is up

    Checks nothing else, so a restart is only triggered when this process itself is stuck.
    """
    from api.app import version

    return {"alive": True, "version": version()}


@blp.route("/readyz")
@blp.doc(security=[])
@blp.response(200, ReadinessSchema)
@blp.alt_response(
    503, schema=NotReadySchema,
    description="Redis or Qdrant cannot be reached, or Qdrant refuses QBM's API key; checks says which"
)
def readyz() -> dict | Response:
    """Redis and Qdrant are reachable, and Qdrant accepts QBM's API key

    A 503 names the dependency that is down, in the error message and in ``checks``.
    """
    svc = services()
    checks = {"redis": "ok", "qdrant": "ok"}
    try:
        svc.redis.ping()
    except redis.RedisError as exc:
        checks["redis"] = f"not reachable: {exc}"
    try:
        # Not GET /: Qdrant answers that one without looking at the API key, so a wrong key would pass.
        svc.qdrant.list_collections()
    except QdrantError as exc:
        status = getattr(exc, "status", None)
        detail = getattr(exc, "message", None) or str(exc)
        checks["qdrant"] = f"not reachable: {detail}" if status is None else f"answered {status}: {detail}"
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        message = "not ready: " + "; ".join(f"{name} {checks[name]}" for name in failing)
        resp = jsonify({"status": {"error": message}, "time": elapsed(), "checks": checks})
        resp.status_code = 503
        return resp
    return {"ready": True, "checks": checks}
