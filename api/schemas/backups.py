"""The backup catalog (read from manifests in storage) and pruning."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields

from api.schemas.common import QuerySchema
from shared.intake.names import COLLECTION_NAME_PATTERN

_COLLECTION = ma.validate.Regexp(COLLECTION_NAME_PATTERN,
                                 error="must be 1-255 characters from A-Z, a-z, 0-9, '_', '.', '-'")


class SetShardSchema(ma.Schema):
    shard_id = fields.Integer(required=True)
    key = fields.String(required=True)
    size = fields.Integer(required=True)
    sha256 = fields.String(required=True)
    peer_id = fields.Integer(required=True, metadata={"description": "The peer it was streamed from"})
    points_count = fields.Integer(allow_none=True, metadata={"description": "As the shard layout reported it"})


class BackupSchema(ma.Schema):
    """A backup as its manifest describes it, and the storage backend it is in."""

    backup_id = fields.String(required=True)
    storage_id = fields.String(required=True)
    collection = fields.String(required=True)
    shard_id = fields.Integer(required=True, allow_none=True)
    type = fields.String(required=True, metadata={"description": "backup or shard_backup"})
    key = fields.String(required=True, metadata={"description": "The snapshot file's key in the storage backend"})
    size = fields.Integer(required=True)
    sha256 = fields.String(required=True)
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    job_id = fields.String(required=True)
    qdrant_snapshot_name = fields.String(required=True)
    qdrant_version = fields.String(required=True, allow_none=True)
    points_count = fields.Integer(required=True, allow_none=True)
    qbm_version = fields.String(required=True)
    format = fields.Integer(required=True)
    kind = fields.String(metadata={"description": "snapshot: one Qdrant snapshot file at key; set: a distributed "
                                                  "collection, one streamed snapshot per shard (shards), key its "
                                                  "folder, size their sum"})
    shards = fields.List(fields.Nested(SetShardSchema), allow_none=True,
                         metadata={"description": "A set's shards (null for a snapshot)"})
    schedule_id = fields.String(required=True, allow_none=True, metadata={
        "description": "The schedule that made this backup (null: made by hand); only its retention may delete it"})
    pinned = fields.Boolean(required=True, metadata={
        "description": "A pinned backup is never deleted, by retention or DELETE, until it is unpinned"})


class BackupPageSchema(ma.Schema):
    items = fields.List(fields.Nested(BackupSchema), required=True)
    total = fields.Integer(required=True, metadata={"description": "Backups matching the filter"})
    page = fields.Integer(required=True)
    limit = fields.Integer(required=True)


def _storage_param() -> fields.String:
    return fields.String(metadata={"description": "Storage backend ID (the default backend when absent)"})


class BackupListQuerySchema(QuerySchema):
    storage_id = _storage_param()
    collection = fields.String(validate=_COLLECTION, metadata={"description": "Only this collection's backups"})
    page = fields.Integer(load_default=1, validate=ma.validate.Range(min=1, max=10**9),
                          metadata={"description": "Page number (1-indexed)"})
    limit = fields.Integer(load_default=20, validate=ma.validate.Range(min=1, max=100),
                           metadata={"description": "Items per page"})


class BackupLocateQuerySchema(QuerySchema):
    collection = fields.String(
        validate=_COLLECTION,
        metadata={"description": "The backup's collection: one manifest read instead of a scan of the listing"},
    )


class PruneSchema(ma.Schema):
    """Apply a retention policy once. At least one of keep_last and max_age_days."""

    storage_id = fields.String(allow_none=True, load_default=None,
                               metadata={"description": "Storage backend ID (the default backend when absent)"})
    collection = fields.String(required=True, validate=_COLLECTION)
    keep_last = fields.Integer(strict=True, allow_none=True, load_default=None, validate=ma.validate.Range(min=1))
    max_age_days = fields.Float(allow_none=True, load_default=None,
                                validate=ma.validate.Range(min=0, min_inclusive=False))
    dry_run = fields.Boolean(load_default=False, metadata={"description": "Only say what would be deleted"})
    schedule_id = fields.String(allow_none=True, load_default=None, validate=ma.validate.Length(min=1, max=200),
                                metadata={"description": "Only the backups this schedule made (default: every "
                                                         "backup of the collection, made by hand or not)"})

    @ma.validates_schema(skip_on_field_errors=True)
    def _one_rule(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("keep_last") is None and data.get("max_age_days") is None:
            raise ma.ValidationError({"keep_last": ["give keep_last and/or max_age_days"]})


class PruneResultSchema(ma.Schema):
    dry_run = fields.Boolean(required=True)
    deleted = fields.List(fields.Nested(BackupSchema), required=True,
                          metadata={"description": "Deleted (or, with dry_run, to be deleted), newest first"})
    kept = fields.List(fields.String(), required=True, metadata={"description": "Backup ids that stay"})
    pinned = fields.List(fields.String(), required=True,
                         metadata={"description": "Backup ids among kept that stay because they are pinned"})
