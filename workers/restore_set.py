"""Restoring a backup set (see :mod:`workers.backup_set`) into a Qdrant cluster of any number of peers.

The ``recover`` step creates the collection from the configuration the set kept (same shard number,
replication factor, vectors, HNSW, optimizer, WAL and quantization settings), recreates its payload indexes,
then recovers every shard on one peer that holds a replica of it in the new collection (an upload of the
stored file, or Qdrant pulling a presigned S3 URL), always with ``priority: snapshot`` and the shard's sha256:
Qdrant then marks the shard's other replicas Dead and copies the recovered one to them. ``verify`` waits until
every replica is Active again and compares the counts with the set's (:func:`verify`); aliases are pointed at
the restored collection when the job asks for it (``metadata.restore_aliases``). A custom-sharded collection's
shard keys are made again first (:func:`key_groups`), and each stored shard goes into the new shard of its key.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from shared.adapters.qdrant import QdrantClient, QdrantError
from shared.adapters.storage.base import ObjectNotFound
from shared.adapters.topology import ACTIVE, Layout, Peer
from shared.domain.manifest import Manifest
from shared.records.job import Job
from workers.context import Context, cancel_check
from workers.errors import JobCancelled, PermanentError

log = logging.getLogger("qbm.worker.restore_set")

PRESIGN_FOR = timedelta(hours=12)
#: How long verify waits for every replica of the restored collection to be Active again.
ACTIVE_WAIT_SECONDS = 600.0
#: How long recover waits for the shards of the recreated shard keys to show in the layout.
SHARDS_WAIT_SECONDS = 60.0
#: How long verify waits for Qdrant's per-shard counts to settle (add up to the exact total) before comparing.
SHARD_COUNT_WAIT_SECONDS = 30.0
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
    try:
        peers = ctx.topology.peers()
        if _custom(manifest) and not peers:  # refused before anything is deleted
            raise PermanentError(f"backup set {manifest.backup_id} is of a collection with custom sharding (shard "
                                 "keys); Qdrant makes shard keys only in distributed mode, and this Qdrant runs as a "
                                 "single node: restore it into a cluster")
        if target in ctx.qdrant.list_collections():
            ctx.qdrant.delete_collection(target)  # replacing was asked for (checked at submission)
        ctx.qdrant.create_collection(target, create_body(config))
        shard_map = _create_shard_keys(ctx, target, manifest) if _custom(manifest) else {}
        for field_name, entry in (manifest.payload_schema or {}).items():
            ctx.qdrant.create_payload_index(target, field_name, index_schema(entry))
        layout = ctx.topology.layout(target)
        still_wanted = cancel_check(ctx.jobs, job.id)
        for index, shard in enumerate(manifest.shards or []):
            if not still_wanted():
                raise JobCancelled(job.id)
            sid = shard_map.get(shard["shard_id"], shard["shard_id"])
            client = _holder(ctx, target, layout, peers, sid)
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
    return {"target": target, "shard_map": {str(old): new for old, new in shard_map.items()}}


def _holder(ctx: Context, target: str, layout: Layout, peers: dict[int, Peer], shard_id: int) -> QdrantClient:
    """A client for a peer holding a replica of the shard in the new collection; on a single-node Qdrant (no
    peers: a set taken from a cluster restored into one node) that node holds every shard."""
    if shard_id not in layout.shards:
        raise PermanentError(f"the new collection {target!r} has no shard {shard_id}")
    if not peers:
        return ctx.qdrant
    peer_id = next((r.peer_id for r in layout.shards[shard_id].replicas if r.peer_id in peers), None)
    if peer_id is None:
        raise PermanentError(f"the new collection {target!r} has no replica of shard {shard_id} on a peer "
                             "QBM can reach")
    return ctx.topology.client_for(peers[peer_id])


def _custom(manifest: Manifest) -> bool:
    return ((manifest.collection_config or {}).get("params") or {}).get("sharding_method") == "custom"


def key_groups(manifest: Manifest) -> list[tuple[Any, list[int]]]:
    """A custom-sharded set's shard keys, each with the ids its shards had, in the order the keys were made
    (as the set's plan recorded them, ``topology.shard_keys``): recreated in that order, a fresh collection
    numbers them the same way."""
    keys = (manifest.topology or {}).get("shard_keys")
    if not keys:
        raise PermanentError(f"backup {manifest.backup_id} is of a custom-sharded collection but its manifest "
                             "lists no shard keys; it cannot be restored into place")
    return [(entry["key"], list(entry["shards"])) for entry in keys]


def _create_shard_keys(ctx: Context, target: str, manifest: Manifest) -> dict[int, int]:
    """Make the set's shard keys in the new collection, each with as many shards as it had, and map every old
    shard id to the new shard of the same key (the same id unless the original had gaps)."""
    params = (manifest.collection_config or {}).get("params") or {}
    groups = key_groups(manifest)
    for key, ids in groups:
        ctx.qdrant.create_shard_key(target, key, shards_number=len(ids),
                                    replication_factor=params.get("replication_factor"))
    wanted = sum(len(ids) for _, ids in groups)
    deadline = time.monotonic() + SHARDS_WAIT_SECONDS
    while not _all_active(layout := ctx.topology.layout(target), wanted):  # as consensus applies them
        if time.monotonic() > deadline:
            raise PermanentError(f"the new collection {target!r} does not show the {wanted} shards of its shard "
                                 f"keys all Active after {SHARDS_WAIT_SECONDS:g} s ({_describe(layout)})")
        time.sleep(0.5)  # polling Qdrant, not synchronising threads
    shard_map: dict[int, int] = {}
    for key, ids in groups:
        new_ids = sorted(s.shard_id for s in layout.shards.values() if s.shard_key == key)
        if len(new_ids) != len(ids):
            raise PermanentError(f"the new collection {target!r} has {len(new_ids)} shard(s) for shard key "
                                 f"{key!r}, the backup set {manifest.backup_id} has {len(ids)}")
        shard_map.update(zip(ids, new_ids, strict=True))
    return shard_map


def _all_active(layout: Layout, wanted: int) -> bool:
    return len(layout.shards) >= wanted and not layout.transfers and all(
        r.state == ACTIVE for s in layout.shards.values() for r in s.replicas)


def _describe(layout: Layout) -> str:
    return "; ".join(f"shard {s.shard_id}: {s.describe_replicas()}" for s in layout.shards.values()) or "no shard"


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
    """Every replica Active again, then the counts: the exact total, each shard key's exact count (custom
    sharding), and each shard's count where the set's per-shard figures were exact (see :func:`_shard_counts`)."""
    target = job.target_collection
    deadline = time.monotonic() + ACTIVE_WAIT_SECONDS
    while not _all_active(layout := ctx.topology.layout(target), 0):
        if time.monotonic() > deadline:
            waiting = [f"shard {s.shard_id}: {s.describe_replicas()}" for s in layout.shards.values()
                       if any(r.state != ACTIVE for r in s.replicas)]
            raise PermanentError(f"restored {target!r}: replicas not Active after {ACTIVE_WAIT_SECONDS:g} s ("
                                 + "; ".join(waiting) + ")")
        time.sleep(1.0)  # polling Qdrant, not synchronising threads
    points = ctx.qdrant.count_points(target, exact=True)
    if manifest.points_count is not None and points != manifest.points_count:
        raise PermanentError(f"restored {target!r} holds {points} points, the backup set {manifest.backup_id} had "
                             f"{manifest.points_count}")
    topology = manifest.topology or {}
    wrong = [f"shard key {entry['key']!r}: {got} points, the set had {entry['points_count']}"
             for entry in topology.get("shard_keys") or []
             if (got := ctx.qdrant.count_points(target, exact=True, shard_key=entry["key"])) != entry["points_count"]]
    if wrong:
        raise PermanentError(f"restored {target!r} does not match backup set {manifest.backup_id}: " + "; ".join(wrong))
    return {"restored_points": points, "shard_keys_checked": len(topology.get("shard_keys") or []),
            **_shard_counts(ctx, job, manifest, layout, points)}


def _shard_counts(ctx: Context, job: Job, manifest: Manifest, layout: Layout, points: int) -> dict:
    """Compare every restored shard's points count with the set's. Qdrant counts per shard id only from segment
    statistics, so both sides are trusted only when they add up to their exact totals: the set recorded whether
    its figures did (``shard_counts_exact``); the restored ones are read until they do (optimisers may still be
    merging segments), for at most ``SHARD_COUNT_WAIT_SECONDS``. When either side never did, the shards are not
    compared (the exact total was) and the job says so."""
    topology = manifest.topology or {}
    if not topology.get("shard_counts_exact"):
        return {"shard_counts_checked": 0,
                "shard_counts_note": "the set's per-shard counts were estimates; the total was checked exactly"}
    shard_map = {int(k): v for k, v in ((job.steps.get("recover") or {}).get("shard_map") or {}).items()}
    peers = ctx.topology.peers()
    deadline = time.monotonic() + SHARD_COUNT_WAIT_SECONDS
    while True:
        counts = ctx.topology.shard_counts(job.target_collection, layout, peers)
        if set(counts) == set(layout.shards) and sum(counts.values()) == points:
            break
        if time.monotonic() > deadline:
            return {"shard_counts_checked": 0, "shard_counts_note": "Qdrant's per-shard counts of the restored "
                    "collection did not add up to its exact total; the total was checked exactly"}
        time.sleep(1.0)  # polling Qdrant, not synchronising threads
    wrong = []
    for shard in manifest.shards or []:
        sid = shard_map.get(shard["shard_id"], shard["shard_id"])
        if shard.get("points_count") is not None and counts.get(sid) != shard["points_count"]:
            wrong.append(f"shard {sid}: {counts.get(sid)} points, the set had {shard['points_count']}")
    if wrong:
        raise PermanentError(f"restored {job.target_collection!r} does not match backup set {manifest.backup_id}: "
                             + "; ".join(wrong))
    return {"shard_counts_checked": len(manifest.shards or [])}
