"""Liveness and readiness probes."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields

from api.envelope import ErrorStatusSchema


class LivenessSchema(ma.Schema):
    alive = fields.Boolean(required=True)
    version = fields.String(required=True, metadata={"description": "QBM version"})


class ReadinessChecksSchema(ma.Schema):
    redis = fields.String(required=True, metadata={"description": "'ok' or why Redis is not usable"})
    qdrant = fields.String(required=True, metadata={"description": "'ok' or why Qdrant is not usable"})


class ReadinessSchema(ma.Schema):
    ready = fields.Boolean(required=True)
    checks = fields.Nested(ReadinessChecksSchema, required=True)


class NotReadySchema(ma.Schema):
    """503 from /readyz: the error envelope, plus which dependency failed."""

    ENVELOPE = False

    status = fields.Nested(ErrorStatusSchema, required=True)
    time = fields.Float(required=True)
    checks = fields.Nested(ReadinessChecksSchema, required=True)
