"""What a job request may say: the schema of POST /jobs' body, shared with the scheduler.

It lives in ``shared`` because the scheduler creates jobs through the same code path as the API
(:mod:`shared.intake.submit`) and must apply exactly the same rules; the API documents and loads its body with
this very class.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import marshmallow as ma
from marshmallow import fields

from shared.intake.names import (
    BACKUP_ID_PATTERN,
    COLLECTION_NAME_PATTERN,
    MAX_SHARD_ID,
    InvalidName,
    check_backup_ref,
    check_collection_name,
)
from shared.records.job_store import JOB_TYPES

PRIORITIES = ("replica", "snapshot", "no_sync")
#: A job's metadata is kept in Redis with the job and shown in every listing: notes and settings, not data.
MAX_METADATA_BYTES = 16 * 1024
SHARD_TYPES = ("shard_backup", "shard_restore")
RESTORE_TYPES = ("restore", "shard_restore")

METADATA_NOTE = (
    "Free-form JSON object. Keys with meaning: storage_id (the backend to write to / read from; "
    "defaults to the default backend, whose id is then stored here), target_collection (restores: "
    "restore under this collection name), replace (restore jobs: true to replace a target collection that "
    "exists; without it such a restore is refused with 409), priority (restores: replica, snapshot or no_sync). "
    "Jobs made by a schedule carry schedule_id and scheduled_for; a backup whose schedule's retention deleted older "
    "backups lists their ids in retention_deleted. While and after a transfer, bytes_done and bytes_total "
    "(null: unknown) count the bytes moved."
)


class JobCreateSchema(ma.Schema):
    """A new job. shard_id is required for (and only allowed with) the shard types; snapshot_name is
    required for (and only allowed with) the restore types and names a QBM backup id (like
    20261124T021500Z-1a2b3c4d) or a .snapshot file name."""

    type = fields.String(
        required=True, validate=ma.validate.OneOf(JOB_TYPES), metadata={"description": "Job type"}
    )
    collection_name = fields.String(
        required=True,
        validate=ma.validate.Regexp(COLLECTION_NAME_PATTERN,
                                    error="must be 1-255 characters from A-Z, a-z, 0-9, '_', '.', '-'"),
        metadata={"description": "Target collection name"},
    )
    shard_id = fields.Integer(strict=True, allow_none=True, validate=ma.validate.Range(min=0, max=MAX_SHARD_ID),
                              metadata={"description": "Target shard ID (for shard operations)"})
    snapshot_name = fields.String(
        allow_none=True,
        validate=ma.validate.Regexp(BACKUP_ID_PATTERN,
                                    error="must be 1-200 characters from A-Z, a-z, 0-9, '_', '.', '-'"),
        metadata={"description": "Backup id or .snapshot name (for restore operations)"},
    )
    metadata = fields.Dict(keys=fields.String(), load_default=dict, metadata={"description": METADATA_NOTE})

    @ma.validates("metadata")
    def _check_metadata_is_json(self, value: dict[str, Any], **kwargs: Any) -> None:
        # Python's JSON parser accepts NaN/Infinity, which are not JSON and cannot be stored.
        try:
            encoded = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        except ValueError:
            raise ma.ValidationError("must contain only JSON values (no NaN or Infinity)") from None
        size = len(encoded.encode())
        if size > MAX_METADATA_BYTES:
            raise ma.ValidationError(f"must be at most {MAX_METADATA_BYTES} bytes as JSON, got {size}")

    @ma.validates_schema(skip_on_field_errors=True)
    def _check_combination(self, data: dict[str, Any], **kwargs: Any) -> None:
        job_type = data["type"]
        errors: dict[str, Any] = {}
        try:
            check_collection_name(data["collection_name"])
        except InvalidName as exc:
            errors["collection_name"] = [str(exc)]
        if job_type in SHARD_TYPES and data.get("shard_id") is None:
            errors["shard_id"] = [f"required for {job_type} jobs"]
        if job_type not in SHARD_TYPES and data.get("shard_id") is not None:
            errors["shard_id"] = [f"only allowed for shard_backup and shard_restore jobs, not {job_type}"]
        snapshot_name = data.get("snapshot_name")
        if job_type in RESTORE_TYPES:
            if snapshot_name is None:
                errors["snapshot_name"] = [f"required for {job_type} jobs"]
            else:
                try:
                    check_backup_ref(snapshot_name)
                except InvalidName as exc:
                    errors["snapshot_name"] = [str(exc)]
        elif snapshot_name is not None:
            errors["snapshot_name"] = [f"only allowed for restore and shard_restore jobs, not {job_type}"]

        metadata = data.get("metadata") or {}
        meta_errors: dict[str, list[str]] = {}
        storage_id = metadata.get("storage_id")
        if storage_id is not None and (not isinstance(storage_id, str) or not storage_id):
            meta_errors["storage_id"] = ["must be a non-empty string"]
        for key in ("target_collection", "priority"):
            if key in metadata and job_type not in RESTORE_TYPES:
                meta_errors[key] = [f"only applies to restore and shard_restore jobs, not {job_type}"]
        if "replace" in metadata:
            if job_type != "restore":
                meta_errors["replace"] = [f"only applies to restore jobs (a shard_restore always replaces its "
                                          f"shard), not {job_type}"]
            elif not isinstance(metadata["replace"], bool):
                meta_errors["replace"] = ["must be true or false"]
        if job_type in RESTORE_TYPES:
            target = metadata.get("target_collection")
            if target is not None:
                try:
                    check_collection_name(target)
                except InvalidName as exc:
                    meta_errors["target_collection"] = [str(exc)]
            priority = metadata.get("priority")
            if priority is not None and priority not in PRIORITIES:
                meta_errors["priority"] = [f"must be one of {', '.join(PRIORITIES)}"]
        if meta_errors:
            errors["metadata"] = meta_errors
        if errors:
            raise ma.ValidationError(errors)


def flatten_errors(errors: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """marshmallow's nested error messages as ``(field path, text)`` pairs; errors about a whole object sit
    under ``_schema``, which is dropped from the path."""
    if isinstance(errors, Mapping):
        for key, value in errors.items():
            yield from flatten_errors(value, path if key == "_schema" else (*path, str(key)))
    elif isinstance(errors, list | tuple):
        if all(isinstance(e, str) for e in errors):
            yield path, " ".join(errors)
        else:
            for item in errors:
                yield from flatten_errors(item, path)
    else:
        yield path, str(errors)
