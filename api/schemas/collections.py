"""Collections, their shard layout, and snapshots."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields

from api.schemas.common import Passthrough

VECTORS_COUNT_NOTE = (
    "Qdrant 1.19 no longer reports vectors_count; this is Qdrant's indexed_vectors_count (the number "
    "of vectors in HNSW indexes), or points_count when Qdrant gives no indexed_vectors_count."
)

AS_QDRANT = {"description": "As Qdrant returns it"}


class CollectionParamsSchema(Passthrough):
    shard_number = fields.Integer(required=True, allow_none=True)
    replication_factor = fields.Integer(required=True, allow_none=True)


class CollectionConfigSchema(Passthrough):
    params = fields.Nested(CollectionParamsSchema, required=True)
    hnsw_config = fields.Dict(required=True, allow_none=True, metadata=AS_QDRANT)
    optimizer_config = fields.Dict(required=True, allow_none=True, metadata=AS_QDRANT)
    wal_config = fields.Dict(required=True, allow_none=True, metadata=AS_QDRANT)


class CollectionSchema(ma.Schema):
    __doc__ = "A collection. " + VECTORS_COUNT_NOTE

    name = fields.String(required=True)
    status = fields.String(required=True, metadata={"description": "green, yellow, grey or red (Qdrant's)"})
    optimizer_status = fields.Raw(required=False, metadata=AS_QDRANT)
    vectors_count = fields.Integer(
        required=True, allow_none=True, metadata={"description": VECTORS_COUNT_NOTE}
    )
    indexed_vectors_count = fields.Integer(required=True, allow_none=True)
    points_count = fields.Integer(required=True, allow_none=True)
    segments_count = fields.Integer(required=True, allow_none=True)
    config = fields.Nested(CollectionConfigSchema, required=True)


class LocalShardSchema(Passthrough):
    shard_id = fields.Integer(required=True)
    points_count = fields.Integer(required=True, allow_none=True)
    state = fields.String(required=True, metadata={"description": "Active, Dead, Partial, ... (Qdrant's)"})


class RemoteShardSchema(Passthrough):
    shard_id = fields.Integer(required=True)
    peer_id = fields.Integer(required=True)
    state = fields.String(required=True)


class ReplicaSchema(ma.Schema):
    peer_id = fields.Integer(required=True)
    state = fields.String(required=True, metadata={"description": "Active, Dead, Partial, Initializing, ..."})


class ShardReplicasSchema(ma.Schema):
    shard_id = fields.Integer(required=True)
    shard_key = fields.Raw(allow_none=True, metadata={"description": "custom sharding only"})
    replicas = fields.List(fields.Nested(ReplicaSchema), required=True)


class CollectionClusterSchema(Passthrough):
    """Shard distribution of a collection (Qdrant's own extra fields, e.g. shard_transfers, are kept)."""

    peer_id = fields.Integer(required=True)
    shard_count = fields.Integer(required=True)
    local_shards = fields.List(fields.Nested(LocalShardSchema), required=True)
    remote_shards = fields.List(fields.Nested(RemoteShardSchema), required=True)
    shards = fields.List(fields.Nested(ShardReplicasSchema), metadata={
        "description": "Every shard with every replica on every peer (local_shards and remote_shards are the "
                       "asked node's view)"})


class SnapshotSchema(ma.Schema):
    name = fields.String(required=True)
    creation_time = fields.String(
        required=True,
        allow_none=True,
        metadata={
            "format": "date-time",
            "description": "ISO 8601 UTC (Qdrant's naive UTC time with Z added)",
        },
    )
    size = fields.Integer(required=True, allow_none=True, metadata={"description": "Bytes"})
    checksum = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "SHA-256 as Qdrant reports it; null when it gives none"},
    )


class RecoverSchema(ma.Schema):
    location = fields.String(
        required=True,
        validate=ma.validate.Length(min=1, max=4096),
        metadata={"description": "Snapshot URL Qdrant fetches itself: http(s):// on an allowed host "
                                 "(QBM_RECOVER_ALLOWED_HOSTS; by default Qdrant's own address and the S3 "
                                 "endpoints of the registered storage backends) or file:///path inside "
                                 "Qdrant's snapshots directory"},
    )
    priority = fields.String(
        load_default="snapshot",
        validate=ma.validate.OneOf(["replica", "snapshot", "no_sync"]),
        metadata={"description": "Recovery priority for conflict resolution"},
    )
    api_key = fields.String(
        load_default=None,
        allow_none=True,
        load_only=True,
        metadata={"description": "Optional API key for authenticated URLs (passed to Qdrant, never stored, "
                                 "returned or logged)"},
    )
    checksum = fields.String(
        load_default=None,
        allow_none=True,
        validate=ma.validate.Regexp(r"^[0-9a-fA-F]{64}$", error="must be a SHA-256 hex digest"),
        metadata={"description": "Optional SHA-256 Qdrant checks the downloaded snapshot against"},
    )

    @ma.validates("location")
    def _check_location(self, value: str, **kwargs: object) -> None:
        scheme = value.split(":", 1)[0].lower() if ":" in value else ""
        if scheme not in ("http", "https", "file"):
            raise ma.ValidationError("must be an http://, https:// or file:// URL")
