"""Storage backends (where backups are written)."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields

from api.schemas.common import QuerySchema

STORAGE_TYPES = ("local", "s3")

_TEXT = ma.validate.Length(min=1, max=1024)


def _text(description: str, *, fmt: str | None = None, load_only: bool = False) -> fields.String:
    metadata = {"description": description}
    if fmt:
        metadata["format"] = fmt
    return fields.String(validate=_TEXT, allow_none=True, load_only=load_only, metadata=metadata)


class StorageSchema(ma.Schema):
    """A storage backend. The S3 secret key is write-only: it is never part of an answer."""

    id = fields.String(required=True)
    name = fields.String(required=True)
    type = fields.String(required=True, validate=ma.validate.OneOf(STORAGE_TYPES))
    path = fields.String(required=True, allow_none=True)
    s3_endpoint = fields.String(required=True, allow_none=True, metadata={"format": "uri"})
    s3_bucket = fields.String(required=True, allow_none=True)
    s3_region = fields.String(required=True, allow_none=True)
    s3_access_key = fields.String(required=True, allow_none=True)
    is_default = fields.Boolean(required=True)
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    updated_at = fields.String(required=True, metadata={"format": "date-time"})


class StorageCreateSchema(ma.Schema):
    """A new storage backend. local needs path (under one of QBM_STORAGE_ROOTS); s3 needs s3_endpoint,
    s3_bucket, s3_region, s3_access_key and s3_secret_key. Fields of the other type are refused."""

    name = fields.String(required=True, validate=ma.validate.Length(min=1, max=200),
                         metadata={"description": "Configuration name"})
    type = fields.String(required=True, validate=ma.validate.OneOf(STORAGE_TYPES),
                         metadata={"description": "Storage backend type"})
    path = _text("Local filesystem path (required for local type); must be under one of QBM_STORAGE_ROOTS")
    s3_endpoint = _text("S3 endpoint URL, http:// or https:// (required for s3 type)", fmt="uri")
    s3_bucket = _text("S3 bucket name (required for s3 type)")
    s3_region = _text("S3 region (required for s3 type)")
    s3_access_key = _text("S3 access key (required for s3 type)")
    s3_secret_key = _text("S3 secret key (required for s3 type; write-only)", load_only=True)
    is_default = fields.Boolean(load_default=False, metadata={"description": "Set as default storage"})


class StorageUpdateSchema(ma.Schema):
    """A partial update: only the fields given change (null clears an optional field). ``type`` may be
    repeated but not changed. The merged result is validated like a new backend."""

    name = fields.String(
        validate=ma.validate.Length(min=1, max=200), metadata={"description": "Configuration name"}
    )
    type = fields.String(
        validate=ma.validate.OneOf(STORAGE_TYPES),
        metadata={"description": "Cannot change; accepted only when equal to the current type"},
    )
    path = _text("Local filesystem path")
    s3_endpoint = _text("S3 endpoint URL", fmt="uri")
    s3_bucket = _text("S3 bucket name")
    s3_region = _text("S3 region")
    s3_access_key = _text("S3 access key")
    s3_secret_key = _text("S3 secret key (write-only; omit to keep the stored one)", load_only=True)
    is_default = fields.Boolean(metadata={"description": "Set as (true) or stop being (false) the default"})


class StorageTestResultSchema(ma.Schema):
    success = fields.Boolean(required=True)
    message = fields.String(required=True)


class StorageDeleteQuerySchema(QuerySchema):
    force = fields.Boolean(
        load_default=False,
        metadata={"description": "Delete the backend even though it holds backups (they stay in storage; "
                                 "register the backend again to list and restore them)"},
    )
