"""The backup chain: create a snapshot on Qdrant, stream it into storage, then write the manifest.

Every step records its result in the job hash and starts by checking that record, so a redelivered
message (after a worker crash) or a retry resumes where the job stopped instead of starting over.
``collection`` and ``shard_backup`` jobs share these steps; ``shard_id`` picks Qdrant's shard endpoints.
"""

from __future__ import annotations

import logging

from shared.adapters.qdrant import QdrantClient, QdrantError
from shared.adapters.storage.base import Cancelled
from shared.domain.manifest import Manifest, backup_prefix, new_backup_id, qbm_version, snapshot_key, write_manifest
from shared.runtime.timeutil import parse_iso, utcnow_iso
from workers.context import Context, Progress, cancel_check, raise_if_cancelled
from workers.errors import JobCancelled, PermanentError

log = logging.getLogger("qbm.worker.backup")

CREATE_END, TRANSFER_END = 10, 95


def _snapshot_ops(qdrant: QdrantClient, job: dict) -> dict:
    """Qdrant's collection or shard snapshot calls, chosen once by the job's ``shard_id``."""
    c, shard = job["collection_name"], job.get("shard_id")
    if shard is None:
        return {
            "list": lambda: qdrant.list_snapshots(c),
            "create": lambda: qdrant.create_snapshot(c, wait=True),
            "download": lambda name: qdrant.download_snapshot(c, name),
            "delete": lambda name: qdrant.delete_snapshot(c, name, wait=True),
        }
    return {
        "list": lambda: qdrant.list_shard_snapshots(c, shard),
        "create": lambda: qdrant.create_shard_snapshot(c, shard, wait=True),
        "download": lambda name: qdrant.download_shard_snapshot(c, shard, name),
        "delete": lambda name: qdrant.delete_shard_snapshot(c, shard, name, wait=True),
    }


def _points_count(qdrant: QdrantClient, job: dict) -> int | None:
    c, shard = job["collection_name"], job.get("shard_id")
    if shard is None:
        return qdrant.collection_info(c).get("points_count")
    info = qdrant.collection_cluster_info(c)
    for local in info.get("local_shards", []):
        if local.get("shard_id") == shard:
            return local.get("points_count")
    raise PermanentError(
        f"shard {shard} of collection {c!r} is not on the Qdrant node at {qdrant.url}; "
        "shard backups must be taken on the node that holds the shard"
    )


def create(ctx: Context, job: dict) -> None:
    """Ask Qdrant for a snapshot (``wait=true``: it may take hours) and remember its name."""
    job_id, steps = job["id"], ctx.jobs.get_steps(job["id"])
    if "create" in steps:
        return
    ops = _snapshot_ops(ctx.qdrant, job)
    backup_id = job.get("snapshot_name") or new_backup_id()
    if not job.get("snapshot_name"):
        ctx.jobs.update(job_id, snapshot_name=backup_id)
    try:
        points = _points_count(ctx.qdrant, job)
        qdrant_version = ctx.qdrant.version()
        started = steps.get("create_started")
        snapshot = _adopt(ops, started["at"]) if started else None
        if snapshot is None:
            ctx.jobs.record_step(job_id, "create_started", {"at": utcnow_iso()})
            snapshot = ops["create"]()
    except QdrantError as exc:
        if exc.status == 404:
            raise PermanentError(f"Qdrant has no collection {job['collection_name']!r}: {exc.message}") from exc
        raise
    if not snapshot or not snapshot.get("name"):
        raise PermanentError("Qdrant accepted the snapshot request but returned no snapshot description")
    ctx.jobs.record_step(job_id, "create", {
        "backup_id": backup_id,
        "snapshot": snapshot["name"],
        "size": snapshot.get("size"),
        "checksum": snapshot.get("checksum"),
        "points_count": points,
        "qdrant_version": qdrant_version,
    })
    ctx.jobs.set_progress(job_id, CREATE_END)


def _adopt(ops: dict, started_at: str) -> dict | None:
    """After a crash during creation, Qdrant may have finished the snapshot anyway (the work runs server
    side): reuse the newest snapshot listed since our first attempt instead of making a second one.
    A listed snapshot is complete (Qdrant renames it into place when done)."""
    since = parse_iso(started_at).timestamp() - 1
    found = [s for s in ops["list"]() if s.get("creation_time")
             and parse_iso(s["creation_time"]).timestamp() >= since]
    return max(found, key=lambda s: s["creation_time"]) if found else None


def transfer(ctx: Context, job: dict) -> None:
    """Stream the snapshot from Qdrant into storage, hashing on the way; compare with Qdrant's checksum."""
    job_id, steps = job["id"], ctx.jobs.get_steps(job["id"])
    if "transfer" in steps:
        return
    made = steps["create"]
    _, storage = ctx.storage_for(job)
    key = snapshot_key(job["collection_name"], made["backup_id"], job.get("shard_id"))
    # A crashed earlier attempt may have left a temp file or an incomplete multipart upload.
    storage.abort_incomplete(backup_prefix(job["collection_name"], made["backup_id"]))
    ops = _snapshot_ops(ctx.qdrant, job)
    try:
        download = ops["download"](made["snapshot"])
    except QdrantError as exc:
        if exc.status == 404:
            # The snapshot vanished from the node (deleted by hand, node rebuilt): take a new one.
            ctx.jobs.clear_steps(job_id)
            raise PermanentError(
                f"snapshot {made['snapshot']} disappeared from Qdrant before it was copied; retry the job "
                "to take a new one"
            ) from exc
        raise
    total = download.size or made.get("size")
    progress = Progress(ctx.jobs, job_id, CREATE_END, TRANSFER_END, total)
    meter = ctx.transfer_meter(job, "backup", storage.kind)
    try:
        with download, meter:
            result = storage.write(key, download, on_progress=meter.tracking(progress),
                                   should_continue=cancel_check(ctx.jobs, job_id), size_hint=total)
    except Cancelled as exc:
        raise JobCancelled(job_id) from exc
    expected = made.get("checksum")
    if expected and result.sha256 != expected.lower():
        storage.delete(key)
        raise PermanentError(
            f"checksum mismatch for snapshot {made['snapshot']}: Qdrant says {expected}, "
            f"the {result.size} bytes received hash to {result.sha256}; nothing was stored"
        )
    if made.get("size") is not None and result.size != made["size"]:
        storage.delete(key)
        raise PermanentError(
            f"size mismatch for snapshot {made['snapshot']}: Qdrant says {made['size']} bytes, "
            f"received {result.size}; nothing was stored"
        )
    ctx.jobs.record_step(job_id, "transfer", {"key": key, "size": result.size, "sha256": result.sha256})
    ctx.jobs.set_progress(job_id, TRANSFER_END)


def finalize(ctx: Context, job: dict) -> None:
    """Write the manifest last (the backup exists from then on), then free the snapshot on Qdrant."""
    job_id, steps = job["id"], ctx.jobs.get_steps(job["id"])
    made, moved = steps["create"], steps["transfer"]
    raise_if_cancelled(ctx.jobs, job_id)
    storage_cfg, storage = ctx.storage_for(job)
    manifest = Manifest(
        backup_id=made["backup_id"],
        job_id=job_id,
        type=job["type"],
        collection=job["collection_name"],
        shard_id=job.get("shard_id"),
        qdrant_snapshot_name=made["snapshot"],
        key=moved["key"],
        size=moved["size"],
        sha256=moved["sha256"],
        created_at=steps.get("create_started", {}).get("at") or utcnow_iso(),
        qdrant_version=made.get("qdrant_version"),
        points_count=made.get("points_count"),
        qbm_version=qbm_version(),
    )
    write_manifest(storage, manifest)
    ctx.jobs.merge_metadata(job_id, {
        "storage_id": storage_cfg["id"],
        "key": moved["key"],
        "size": moved["size"],
        "sha256": moved["sha256"],
        "qdrant_snapshot": made["snapshot"],
    })
    if not (job.get("metadata") or {}).get("keep_on_qdrant"):
        delete_qdrant_snapshot(ctx, job, made["snapshot"])
    ctx.jobs.record_step(job_id, "finalize", {"at": utcnow_iso()})


def delete_qdrant_snapshot(ctx: Context, job: dict, name: str) -> None:
    try:
        _snapshot_ops(ctx.qdrant, job)["delete"](name)
    except QdrantError as exc:
        if exc.status != 404:
            log.warning("could not delete snapshot %s on Qdrant: %s", name, exc,
                        extra={"job_id": job["id"], "collection": job["collection_name"]})


def cleanup_cancelled(ctx: Context, job: dict) -> None:
    """Undo what a cancelled backup made: its Qdrant snapshot and any unfinished object in storage.

    A backup whose manifest was already written is complete and is left alone."""
    steps = ctx.jobs.get_steps(job["id"])
    if "finalize" in steps:
        return
    made = steps.get("create")
    if made:
        delete_qdrant_snapshot(ctx, job, made["snapshot"])
        try:
            _, storage = ctx.storage_for(job)
            prefix = backup_prefix(job["collection_name"], made["backup_id"])
            storage.abort_incomplete(prefix)
            storage.delete_prefix(prefix)
        except PermanentError:
            pass
    ctx.jobs.clear_steps(job["id"])
