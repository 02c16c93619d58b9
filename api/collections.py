"""Collections and their snapshots, passed through to Qdrant with our validation and shapes.

Names are checked before anything reaches Qdrant (they end up in Qdrant URLs); Qdrant's own answers are
reshaped to the contract (ISO timestamps with Z, ``null`` for missing checksums) and its errors are
mapped by the app-wide handler (404 stays 404, unreachable is 503, anything else unexpected is 502).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from flask import Response
from flask_smorest import abort
from werkzeug.http import dump_options_header

from api.envelope import Blueprint, BoolResult, NullResultSchema, ok_response
from api.schemas.collections import (
    VECTORS_COUNT_NOTE,
    CollectionClusterSchema,
    CollectionSchema,
    RecoverSchema,
    SnapshotSchema,
)
from api.schemas.common import NameListResult, WaitQuerySchema
from api.services import services
from shared.adapters.qdrant import QdrantError, SnapshotDownload
from shared.adapters.topology import parse_layout
from shared.intake.names import (
    COLLECTION_NAME_PATTERN,
    MAX_SHARD_ID,
    InvalidName,
    check_collection_name,
    check_shard_id,
    check_snapshot_name,
)
from shared.intake.recover_location import (
    HostRule,
    InvalidLocation,
    check_recover_location,
    parse_host_entry,
    rule_for_url,
)
from shared.runtime.timeutil import parse_iso, to_iso

log = logging.getLogger("qbm.api")

blp = Blueprint("collections", __name__, description="Collections, their shards and snapshots (Qdrant)")

NAME_PARAM = {
    "in": "path",
    "name": "name",
    "description": "Collection name",
    "schema": {"type": "string", "pattern": COLLECTION_NAME_PATTERN},
}
SNAPSHOT_PARAM = {
    "in": "path",
    "name": "snapshotName",
    "description": "Snapshot name: a plain file name ending in .snapshot",
    "schema": {"type": "string"},
}
SHARD_PARAM = {
    "in": "path",
    "name": "shardId",
    "description": "Shard ID",
    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SHARD_ID},
}
#: Every call that reaches Qdrant may answer these (Qdrant's 400/404/422 pass through; see app.py).
QDRANT_ERRORS = (400, 404, 422, 502, 503)
BINARY = {"type": "string", "format": "binary"}
ACCEPTED = "Accepted (wait=false): Qdrant works in the background; result is null"


# --- checks and reshaping -----------------------------------------------------------------------------


def checked_collection(name: str) -> str:
    try:
        return check_collection_name(name)
    except InvalidName as exc:
        abort(422, message=f"name: collection name {exc}")
        raise  # unreachable; abort raises


def checked_snapshot(name: str) -> str:
    try:
        return check_snapshot_name(name)
    except InvalidName as exc:
        abort(422, message=f"snapshotName: snapshot name {exc}")
        raise


def checked_shard(value: str) -> int:
    try:
        return check_shard_id(value)
    except InvalidName as exc:
        abort(422, message=f"shardId: {exc}")
        raise


def snapshot_view(raw: dict[str, Any]) -> dict[str, Any]:
    """Qdrant's snapshot description -> ours: creation_time as ISO 8601 with Z (Qdrant's is naive UTC)."""
    created = raw.get("creation_time")
    if created:
        try:
            created = to_iso(parse_iso(created))
        except (TypeError, ValueError):
            pass  # an unexpected format is passed on rather than dropped
    return {
        "name": raw.get("name"),
        "creation_time": created or None,
        "size": raw.get("size"),
        "checksum": raw.get("checksum") or None,
    }


def collection_view(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Qdrant's collection info -> ours (see VECTORS_COUNT_NOTE for vectors_count)."""
    config = dict(raw.get("config") or {})
    params = dict(config.get("params") or {})
    params.setdefault("shard_number", None)
    params.setdefault("replication_factor", None)
    config["params"] = params
    for key in ("hnsw_config", "optimizer_config", "wal_config"):
        config.setdefault(key, None)
    indexed = raw.get("indexed_vectors_count")
    points = raw.get("points_count")
    return {
        "name": name,
        "status": raw.get("status"),
        "optimizer_status": raw.get("optimizer_status"),
        "vectors_count": indexed if indexed is not None else points,
        "indexed_vectors_count": indexed,
        "points_count": points,
        "segments_count": raw.get("segments_count"),
        "config": config,
    }


def cluster_view(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    result = dict(raw)
    result.setdefault("local_shards", [])
    result.setdefault("remote_shards", [])
    layout = parse_layout(name, raw)
    result["shards"] = [{"shard_id": s.shard_id, "shard_key": s.shard_key,
                         "replicas": [{"peer_id": r.peer_id, "state": r.state} for r in s.replicas]}
                        for s in layout.shards.values()]
    return result


def _stream(download: SnapshotDownload, what: str) -> Iterator[bytes]:
    """Chunks from Qdrant straight to the client; nothing is buffered beyond one chunk."""
    try:
        yield from download
    except Exception:
        # Headers (and maybe Content-Length) are already sent: all we can do is stop; the client sees a
        # short body. Logged so the operator knows why.
        log.warning("snapshot download of %s broke off", what, exc_info=True)
        raise


def download_response(download: SnapshotDownload, filename: str) -> Response:
    headers = {"Content-Disposition": dump_options_header("attachment", {"filename": filename})}
    size = getattr(download, "size", None)
    if size is not None:
        headers["Content-Length"] = str(size)
    resp = Response(
        _stream(download, filename),
        mimetype="application/octet-stream",
        headers=headers,
        direct_passthrough=True,
    )
    resp.call_on_close(download.close)
    return resp


# --- collections --------------------------------------------------------------------------------------


@blp.route("/collections")
@blp.response(200, NameListResult)
@blp.errors(401, *QDRANT_ERRORS)
def list_collections() -> list[str]:
    """Names of all collections"""
    return services().qdrant.list_collections()


@blp.route("/collections/<name>", parameters=[NAME_PARAM])
@blp.response(200, CollectionSchema, description="Collection details. " + VECTORS_COUNT_NOTE)
@blp.errors(401, *QDRANT_ERRORS)
def get_collection(name: str) -> dict:
    """Details of one collection

    vectors_count is Qdrant's indexed_vectors_count (Qdrant 1.19 has no vectors_count).
    """
    name = checked_collection(name)
    return collection_view(name, services().qdrant.collection_info(name))


@blp.route("/collections/<name>/cluster", parameters=[NAME_PARAM])
@blp.response(200, CollectionClusterSchema)
@blp.errors(401, *QDRANT_ERRORS)
def get_collection_cluster(name: str) -> dict:
    """Shard distribution of a collection"""
    name = checked_collection(name)
    return cluster_view(name, services().qdrant.collection_cluster_info(name))


# --- collection snapshots -----------------------------------------------------------------------------


@blp.route("/collections/<name>/snapshots", parameters=[NAME_PARAM])
@blp.response(200, SnapshotSchema(many=True))
@blp.errors(401, *QDRANT_ERRORS)
def list_snapshots(name: str) -> list[dict]:
    """Snapshots of a collection"""
    name = checked_collection(name)
    return [snapshot_view(s) for s in services().qdrant.list_snapshots(name)]


@blp.route("/collections/<name>/snapshots", methods=["POST"], parameters=[NAME_PARAM])
@blp.arguments(WaitQuerySchema, location="query")
@blp.response(200, SnapshotSchema, description="The snapshot, created (wait=true)")
@blp.alt_response(202, schema=NullResultSchema, description=ACCEPTED, success=True)
@blp.errors(401, *QDRANT_ERRORS)
def create_snapshot(args: dict, name: str) -> dict | Response:
    """Create a snapshot of a collection

    With wait=false Qdrant does not say the snapshot's name yet: the answer is 202 with result null;
    list the snapshots later to find it.
    """
    name = checked_collection(name)
    created = services().qdrant.create_snapshot(name, wait=args["wait"])
    if not args["wait"] or created is None:
        return ok_response(None, 202)
    return snapshot_view(created)


@blp.route("/collections/<name>/snapshots/<snapshotName>", methods=["DELETE"],
           parameters=[NAME_PARAM, SNAPSHOT_PARAM])
@blp.arguments(WaitQuerySchema, location="query")
@blp.response(200, BoolResult, description="Deleted (wait=true)")
@blp.alt_response(202, schema=NullResultSchema, description=ACCEPTED, success=True)
@blp.errors(401, *QDRANT_ERRORS)
def delete_snapshot(args: dict, name: str, snapshotName: str) -> bool | Response:  # noqa: N803 - contract name
    """Delete a snapshot of a collection

    With wait=false the answer is 202 with result null.
    """
    name = checked_collection(name)
    snapshot = checked_snapshot(snapshotName)
    done = services().qdrant.delete_snapshot(name, snapshot, wait=args["wait"])
    if not args["wait"]:
        return ok_response(None, 202)
    return bool(done)


@blp.route("/collections/<name>/snapshots/<snapshotName>/download", parameters=[NAME_PARAM, SNAPSHOT_PARAM])
@blp.response(200, BINARY, content_type="application/octet-stream",
              description="The snapshot file, streamed from Qdrant (never buffered whole)")
@blp.errors(401, *QDRANT_ERRORS)
def download_snapshot(name: str, snapshotName: str) -> Response:  # noqa: N803 - contract name
    """Download a snapshot file

    The file is streamed through from Qdrant chunk by chunk, with Content-Length when Qdrant gives it.
    """
    name = checked_collection(name)
    snapshot = checked_snapshot(snapshotName)
    download = services().qdrant.download_snapshot(name, snapshot)
    return download_response(download, snapshot)


@blp.route("/collections/<name>/snapshots/recover", methods=["PUT"], parameters=[NAME_PARAM])
@blp.arguments(RecoverSchema)
@blp.arguments(WaitQuerySchema, location="query")
@blp.response(200, BoolResult, description="Recovered (wait=true)")
@blp.alt_response(202, schema=NullResultSchema, description=ACCEPTED, success=True)
@blp.errors(401, *QDRANT_ERRORS)
def recover_snapshot(body: dict, args: dict, name: str) -> bool | Response:
    """Recover a collection from a snapshot URL

    Qdrant fetches the snapshot from location itself, using api_key when given. http(s):// locations must
    be on an allowed host (QBM_RECOVER_ALLOWED_HOSTS; by default Qdrant's own address and the S3 endpoints
    of the registered storage backends), else 422; file:// locations must be inside Qdrant's snapshots
    directory (Qdrant's refusal is a 422 with its message). The api_key is passed to Qdrant only: never
    stored, returned or logged.
    """
    name = checked_collection(name)
    location = body["location"]
    try:
        check_recover_location(location, _recover_rules())
    except InvalidLocation as exc:
        abort(422, message=f"location: {exc}")
    try:
        done = services().qdrant.recover_from_url(
            name,
            location,
            priority=body["priority"],
            checksum=body.get("checksum"),
            api_key=body.get("api_key"),
            wait=args["wait"],
        )
    except QdrantError as exc:
        if exc.status == 403 and location.lower().startswith("file:"):
            abort(422, message=f"location: Qdrant refused to read it ({exc.message}); file:// locations must be "
                               "inside Qdrant's snapshots directory")
        raise
    if not args["wait"]:
        return ok_response(None, 202)
    return bool(done)


def _recover_rules() -> Iterator[HostRule]:
    """The hosts a recover location may point at (lazily: Redis is read only for http(s) locations)."""
    svc = services()
    if svc.config.recover_allowed_hosts is not None:
        yield from (parse_host_entry(entry) for entry in svc.config.recover_allowed_hosts)
        return
    urls = [svc.config.qdrant_url]
    urls += [c["s3_endpoint"] for c in svc.storage_configs.list() if c.get("type") == "s3" and c.get("s3_endpoint")]
    yield from (rule for rule in map(rule_for_url, urls) if rule is not None)


# --- shard snapshots ----------------------------------------------------------------------------------


@blp.route("/collections/<name>/shards/<shardId>/snapshots", parameters=[NAME_PARAM, SHARD_PARAM])
@blp.response(200, SnapshotSchema(many=True))
@blp.errors(401, *QDRANT_ERRORS)
def list_shard_snapshots(name: str, shardId: str) -> list[dict]:  # noqa: N803 - contract name
    """Snapshots of one shard"""
    name = checked_collection(name)
    shard = checked_shard(shardId)
    return [snapshot_view(s) for s in services().qdrant.list_snapshots(name, shard_id=shard)]


@blp.route("/collections/<name>/shards/<shardId>/snapshots", methods=["POST"],
           parameters=[NAME_PARAM, SHARD_PARAM])
@blp.arguments(WaitQuerySchema, location="query")
@blp.response(200, SnapshotSchema, description="The shard snapshot, created (wait=true)")
@blp.alt_response(202, schema=NullResultSchema, description=ACCEPTED, success=True)
@blp.errors(401, *QDRANT_ERRORS)
def create_shard_snapshot(args: dict, name: str, shardId: str) -> dict | Response:  # noqa: N803
    """Create a snapshot of one shard

    With wait=false the answer is 202 with result null.
    """
    name = checked_collection(name)
    shard = checked_shard(shardId)
    created = services().qdrant.create_snapshot(name, shard_id=shard, wait=args["wait"])
    if not args["wait"] or created is None:
        return ok_response(None, 202)
    return snapshot_view(created)


@blp.route("/collections/<name>/shards/<shardId>/snapshots/<snapshotName>", methods=["DELETE"],
           parameters=[NAME_PARAM, SHARD_PARAM, SNAPSHOT_PARAM])
@blp.arguments(WaitQuerySchema, location="query")
@blp.response(200, BoolResult, description="Deleted (wait=true)")
@blp.alt_response(202, schema=NullResultSchema, description=ACCEPTED, success=True)
@blp.errors(401, *QDRANT_ERRORS)
def delete_shard_snapshot(args: dict, name: str, shardId: str, snapshotName: str) -> bool | Response:  # noqa: N803
    """Delete a snapshot of one shard

    A shard snapshot made through QBM (or directly on the node) can be cleaned up the same way as a collection
    snapshot. With wait=false the answer is 202 with result null.
    """
    name, shard, snapshot = checked_collection(name), checked_shard(shardId), checked_snapshot(snapshotName)
    done = services().qdrant.delete_snapshot(name, snapshot, shard_id=shard, wait=args["wait"])
    if not args["wait"]:
        return ok_response(None, 202)
    return bool(done)


@blp.route("/collections/<name>/shards/<shardId>/snapshots/<snapshotName>/download",
           parameters=[NAME_PARAM, SHARD_PARAM, SNAPSHOT_PARAM])
@blp.response(200, BINARY, content_type="application/octet-stream",
              description="The shard snapshot file, streamed from Qdrant (never buffered whole)")
@blp.errors(401, *QDRANT_ERRORS)
def download_shard_snapshot(name: str, shardId: str, snapshotName: str) -> Response:  # noqa: N803
    """Download a snapshot file of one shard

    Streamed through from Qdrant chunk by chunk, with Content-Length when Qdrant gives it.
    """
    name, shard, snapshot = checked_collection(name), checked_shard(shardId), checked_snapshot(snapshotName)
    return download_response(services().qdrant.download_snapshot(name, snapshot, shard_id=shard), snapshot)
