"""Restoring a backup set (see :mod:`workers.backup_set`) into a Qdrant cluster of any number of peers.

The ``recover`` step creates the collection from the configuration the set kept (same shard number,
replication factor, vectors, HNSW, optimizer, WAL and quantization settings), recreates its payload indexes,
then recovers every shard on one peer that holds a replica of it in the new collection (an upload of the
stored file, or Qdrant pulling a presigned S3 URL), always with ``priority: snapshot`` and the shard's sha256:
Qdrant then marks the shard's other replicas Dead and copies the recovered one to them. ``verify`` waits until
every replica is Active again and compares the exact points count with the set's; aliases are pointed at the
restored collection when the job asks for it (``metadata.restore_aliases``).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from shared.adapters.qdrant import QdrantError
from shared.adapters.storage.base import ObjectNotFound
from shared.domain.manifest import Manifest
from shared.records.job import Job
from workers.context import Context, cancel_check
from workers.errors import JobCancelled, PermanentError

log = logging.getLogger("qbm.worker.restore_set")

PRESIGN_FOR = timedelta(hours=12)
#: How long verify waits for every replica of the restored collection to be Active again.
ACTIVE_WAIT_SECONDS = 600.0
#: Collection settings a CreateCollection body takes, by their name in ``GET /collections/{c}``'s config.
_PARAMS = ("vectors", "shard_number", "replication_factor", "write_consistency_factor", "on_disk_payload",
           "sharding_method", "sparse_vectors")
_SECTIONS = {"hnsw_config": "hnsw_config", "optimizer_config": "optimizers_config", "wal_config": "wal_config",
             "quantization_config": "quantization_config", "strict_mode_config": "strict_mode_config"}


def check_files(storage: Any, manifest: Manifest) -> None:
    """Every shard file of the set is in storage with the size the manifest gives."""
    for shard in manifest.shards or []:
        try:
            info = storage.stat(shard["key"])
        except ObjectNotFound:
            raise PermanentError(f"backup {manifest.backup_id}: the file of shard {shard['shard_id']} "
                                 f"({shard['key']}) is missing") from None
        if info.size != shard["size"]:
            raise PermanentError(f"backup {manifest.backup_id}: the file of shard {shard['shard_id']} is "
                                 f"{info.size} bytes, the manifest says {shard['size']}")


def create_body(config: dict[str, Any]) -> dict[str, Any]:
    """A CreateCollection body that rebuilds a collection with ``config`` (as ``GET /collections/{c}`` shows it)."""
    params = config.get("params") or {}
    body = {key: params[key] for key in _PARAMS if params.get(key) is not None}
    for ours, theirs in _SECTIONS.items():
        section = config.get(ours)
        if isinstance(section, dict):
            section = {k: v for k, v in section.items() if v is not None}
        if section:
            body[theirs] = section
    return body


def index_schema(entry: dict[str, Any]) -> Any:
    """``payload_schema`` entry -> the ``field_schema`` to create the index with."""
    params = entry.get("params")
    return params if isinstance(params, dict) and params else entry.get("data_type")


def recover(ctx: Context, job: Job, manifest: Manifest, storage_type: str, storage: Any, priority: str) -> dict:
    target = job.target_collection
    config = manifest.collection_config or {}
    if (config.get("params") or {}).get("sharding_method") == "custom":
        raise PermanentError(f"backup {manifest.backup_id} is of a collection with custom sharding (shard keys); "
                             "restoring such a set is not supported yet")
    try:
        if target in ctx.qdrant.list_collections():
            ctx.qdrant.delete_collection(target)  # replacing was asked for (checked at submission)
        ctx.qdrant.create_collection(target, create_body(config))
        for field_name, entry in (manifest.payload_schema or {}).items():
            ctx.qdrant.create_payload_index(target, field_name, index_schema(entry))
        peers = ctx.topology.peers()
        layout = ctx.topology.layout(target)
        still_wanted = cancel_check(ctx.jobs, job.id)
        for index, shard in enumerate(manifest.shards or []):
            if not still_wanted():
                raise JobCancelled(job.id)
            sid = shard["shard_id"]
            holders = [r.peer_id for r in layout.shards[sid].replicas] if sid in layout.shards else []
            peer_id = next((p for p in holders if p in peers), None)
            if peer_id is None:
                raise PermanentError(f"the new collection {target!r} has no replica of shard {sid} on a peer "
                                     "QBM can reach")
            client = ctx.topology.client_for(peers[peer_id])
            if storage_type == "s3" and not job.metadata.get("upload"):
                url = storage.presigned_get_url(shard["key"], PRESIGN_FOR)
                client.recover_from_url(target, url, shard_id=sid, priority=priority, checksum=shard["sha256"])
            else:
                name = f"qbm-restore-{job.id}-{sid}.snapshot"
                with storage.open(shard["key"]) as raw:
                    try:
                        client.upload_and_recover(target, raw, shard_id=sid, filename=name, size=shard["size"],
                                                  priority=priority, checksum=shard["sha256"])
                    finally:
                        _delete_uploaded(client, target, sid, name, job)
            ctx.jobs.set_progress(job.id, 5 + 85 * (index + 1) // max(1, len(manifest.shards or [])))
        if job.metadata.get("restore_aliases"):
            _point_aliases(ctx, target, manifest.aliases or [])
    except QdrantError as exc:
        if not exc.transient:
            raise PermanentError(f"Qdrant refused to restore {target!r} from backup set {manifest.backup_id}: "
                                 f"{exc.message} (HTTP {exc.status})") from exc
        raise
    return {"target": target}


def _delete_uploaded(client: Any, target: str, shard_id: int, name: str, job: Job) -> None:
    try:
        client.delete_snapshot(target, name, shard_id=shard_id, wait=True)
    except QdrantError as exc:
        if exc.status != 404:
            log.warning("could not delete uploaded snapshot %s on Qdrant: %s", name, exc,
                        extra={"job_id": job.id, "collection": target})


def _point_aliases(ctx: Context, target: str, aliases: list[str]) -> None:
    for alias in aliases:
        actions: list[dict[str, Any]] = [{"create_alias": {"collection_name": target, "alias_name": alias}}]
        try:
            ctx.qdrant.update_aliases([{"delete_alias": {"alias_name": alias}}, *actions])
        except QdrantError as exc:
            if exc.transient:
                raise
            ctx.qdrant.update_aliases(actions)  # the alias did not exist: nothing to delete


def verify(ctx: Context, job: Job, manifest: Manifest) -> dict:
    """Every replica Active again, and the exact count equal to the set's."""
    target = job.target_collection
    deadline = time.monotonic() + ACTIVE_WAIT_SECONDS
    while True:
        layout = ctx.topology.layout(target)
        waiting = [f"shard {s.shard_id}: {s.describe_replicas()}" for s in layout.shards.values()
                   if any(r.state != "Active" for r in s.replicas)]
        if not waiting and not layout.transfers:
            break
        if time.monotonic() > deadline:
            raise PermanentError(f"restored {target!r}: replicas not Active after {ACTIVE_WAIT_SECONDS:g} s ("
                                 + "; ".join(waiting) + ")")
        time.sleep(1.0)  # polling Qdrant, not synchronising threads
    points = ctx.qdrant.count_points(target, exact=True)
    if manifest.points_count is not None and points != manifest.points_count:
        raise PermanentError(f"restored {target!r} holds {points} points, the backup set {manifest.backup_id} had "
                             f"{manifest.points_count}")
    return {"restored_points": points}
