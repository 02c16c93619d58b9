"""The restore chain: check the backup's manifest, hand the snapshot to Qdrant, verify the result.

S3 backups are pulled by Qdrant itself from a presigned URL (no bytes pass through the worker) unless
``metadata.upload`` is true; local backups are streamed into Qdrant's upload endpoint. Qdrant keeps an
uploaded file in its snapshots directory after recovering from it (SNAPSHOT_API.md, C6), so the worker
deletes it, or every restore would leave a full copy on the node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from typing import BinaryIO

from shared.adapters.qdrant import QdrantError
from shared.adapters.storage.base import ObjectNotFound
from shared.domain.manifest import Manifest, read_manifest
from workers.context import Context, Progress, cancel_check
from workers.errors import JobCancelled, PermanentError

log = logging.getLogger("qbm.worker.restore")

PREPARE_END, RECOVER_END = 5, 90
PRESIGN_FOR = timedelta(hours=12)


def target_collection(job: dict) -> str:
    return (job.get("metadata") or {}).get("target_collection") or job["collection_name"]


def _manifest(ctx: Context, job: dict) -> Manifest:
    return Manifest(**ctx.jobs.get_steps(job["id"])["prepare"]["manifest"])


def prepare(ctx: Context, job: dict) -> None:
    """Find the backup by its id in the job's storage and check that it is whole."""
    job_id = job["id"]
    if "prepare" in ctx.jobs.get_steps(job_id):
        return
    _, storage = ctx.storage_for(job)
    manifest = read_manifest(storage, job["collection_name"], job["snapshot_name"])
    if job["type"] == "shard_restore":
        if manifest.shard_id is None:
            raise PermanentError(f"backup {manifest.backup_id} is a collection backup; use a restore job")
        if job.get("shard_id") != manifest.shard_id:
            raise PermanentError(
                f"backup {manifest.backup_id} holds shard {manifest.shard_id}, not shard {job.get('shard_id')}"
            )
    elif manifest.shard_id is not None:
        raise PermanentError(f"backup {manifest.backup_id} is a shard backup; use a shard_restore job")
    try:
        info = storage.stat(manifest.key)
    except ObjectNotFound:
        raise PermanentError(f"backup {manifest.backup_id}: its snapshot file {manifest.key} is missing") from None
    if info.size != manifest.size:
        raise PermanentError(
            f"backup {manifest.backup_id}: snapshot file is {info.size} bytes, the manifest says {manifest.size}"
        )
    ctx.jobs.record_step(job_id, "prepare", {"manifest": asdict(manifest)})
    ctx.jobs.set_progress(job_id, PREPARE_END)


class _CountingReader:
    """Wraps a storage stream for upload: reports bytes read and stops the upload when cancelled."""

    def __init__(self, raw: BinaryIO, progress: Callable[[int], None], should_continue: object) -> None:
        self.raw, self.progress, self.should_continue = raw, progress, should_continue
        self.done = 0

    def read(self, n: int = -1) -> bytes:
        if not self.should_continue():  # type: ignore[operator]
            raise JobCancelled("cancelled during upload")
        data = self.raw.read(n)
        self.done += len(data)
        self.progress(self.done)
        return data


def recover(ctx: Context, job: dict) -> None:
    job_id = job["id"]
    if "recover" in ctx.jobs.get_steps(job_id):
        return
    manifest = _manifest(ctx, job)
    cfg, storage = ctx.storage_for(job)
    meta = job.get("metadata") or {}
    target, shard, priority = target_collection(job), job.get("shard_id"), meta.get("priority")
    q = ctx.qdrant
    try:
        if cfg["type"] == "s3" and not meta.get("upload"):
            url = storage.presigned_get_url(manifest.key, PRESIGN_FOR)
            if shard is None:
                q.recover_from_url(target, url, priority=priority, checksum=manifest.sha256)
            else:
                q.recover_shard_from_url(target, shard, url, priority=priority, checksum=manifest.sha256)
        else:
            upload_name = f"qbm-restore-{job_id}.snapshot"
            progress = Progress(ctx.jobs, job_id, PREPARE_END, RECOVER_END, manifest.size)
            meter = ctx.transfer_meter(job, "restore", storage.kind)
            with storage.open(manifest.key) as raw, meter:
                reader = _CountingReader(raw, meter.tracking(progress), cancel_check(ctx.jobs, job_id))
                try:
                    if shard is None:
                        q.upload_and_recover(target, reader, filename=upload_name, size=manifest.size,
                                             priority=priority, checksum=manifest.sha256)
                    else:
                        q.upload_and_recover_shard(target, shard, reader, filename=upload_name,
                                                   size=manifest.size, priority=priority,
                                                   checksum=manifest.sha256)
                finally:
                    _delete_uploaded(ctx, target, shard, upload_name, job_id)
    except QdrantError as exc:
        if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (408, 429):
            raise PermanentError(f"Qdrant refused to recover {target!r} from backup "
                                 f"{manifest.backup_id}: {exc.message} (HTTP {exc.status})") from exc
        raise
    ctx.jobs.record_step(job_id, "recover", {"target": target})
    ctx.jobs.set_progress(job_id, RECOVER_END)


def _delete_uploaded(ctx: Context, target: str, shard: int | None, name: str, job_id: str) -> None:
    try:
        if shard is None:
            ctx.qdrant.delete_snapshot(target, name, wait=True)
        else:
            ctx.qdrant.delete_shard_snapshot(target, shard, name, wait=True)
    except QdrantError as exc:
        if exc.status != 404:
            log.warning("could not delete uploaded snapshot %s on Qdrant: %s", name, exc,
                        extra={"job_id": job_id, "collection": target})


def verify(ctx: Context, job: dict) -> None:
    """The collection (or shard) exists again and holds as many points as the backup did."""
    manifest = _manifest(ctx, job)
    target, shard = target_collection(job), job.get("shard_id")
    try:
        if shard is None:
            points = ctx.qdrant.collection_info(target).get("points_count")
        else:
            shards = ctx.qdrant.collection_cluster_info(target).get("local_shards", [])
            points = next((s.get("points_count") for s in shards if s.get("shard_id") == shard), None)
    except QdrantError as exc:
        if exc.status == 404:
            raise PermanentError(f"after recovery, Qdrant has no collection {target!r}") from exc
        raise
    if manifest.points_count is not None and points != manifest.points_count:
        raise PermanentError(
            f"restored {target!r} holds {points} points, the backup {manifest.backup_id} had "
            f"{manifest.points_count}"
        )
    ctx.jobs.merge_metadata(job["id"], {"restored_points": points, "target_collection": target,
                                        "sha256": manifest.sha256, "size": manifest.size})
