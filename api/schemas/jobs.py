"""Backup and restore jobs. The request body's schema lives in :mod:`shared.intake.schema` because the
scheduler creates jobs through the same code path and rules."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields

from api.schemas.common import QuerySchema
from shared.intake.schema import (  # noqa: F401 - re-exported for the API's views
    METADATA_NOTE,
    PRIORITIES,
    RESTORE_TYPES,
    SHARD_TYPES,
    JobCreateSchema,
)
from shared.records.job_store import JOB_STATUSES, JOB_TYPES


class JobSchema(ma.Schema):
    id = fields.String(required=True)
    type = fields.String(required=True, validate=ma.validate.OneOf(JOB_TYPES))
    status = fields.String(required=True, validate=ma.validate.OneOf(JOB_STATUSES))
    collection_name = fields.String(required=True)
    shard_id = fields.Integer(required=True, allow_none=True)
    snapshot_name = fields.String(required=True, allow_none=True)
    progress = fields.Integer(required=True, validate=ma.validate.Range(min=0, max=100))
    error = fields.String(required=True, allow_none=True)
    metadata = fields.Dict(required=True, metadata={"description": METADATA_NOTE})
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    started_at = fields.String(required=True, allow_none=True, metadata={"format": "date-time"})
    completed_at = fields.String(required=True, allow_none=True, metadata={"format": "date-time"})


class JobPageSchema(ma.Schema):
    """GET /jobs answers this object bare (no status/time/result envelope), as the contract shows."""

    ENVELOPE = False

    items = fields.List(fields.Nested(JobSchema), required=True)
    total = fields.Integer(required=True, metadata={"description": "Jobs matching the filter"})
    page = fields.Integer(required=True)
    limit = fields.Integer(required=True)


class JobListQuerySchema(QuerySchema):
    status = fields.String(
        validate=ma.validate.OneOf(JOB_STATUSES), metadata={"description": "Filter by job status"}
    )
    type = fields.String(validate=ma.validate.OneOf(JOB_TYPES), metadata={"description": "Filter by type"})
    page = fields.Integer(load_default=1, validate=ma.validate.Range(min=1),
                          metadata={"description": "Page number (1-indexed)"})
    limit = fields.Integer(load_default=20, validate=ma.validate.Range(min=1, max=100),
                           metadata={"description": "Items per page"})
