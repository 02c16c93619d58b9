"""The restore chain: check the backup's manifest, hand the snapshot to Qdrant, verify the result.

S3 backups are pulled by Qdrant itself from a presigned URL (no bytes pass through the worker) unless
``metadata.upload`` is true; local backups are streamed into Qdrant's upload endpoint. Qdrant keeps an
uploaded file in its snapshots directory after recovering from it, so the worker deletes it, or every restore
would leave a full copy on the node. ``restore`` and ``shard_restore`` jobs share these steps; the job's
``shard_id`` scopes every Qdrant call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from typing import BinaryIO

from shared.adapters.qdrant import QdrantClient, QdrantError
from shared.adapters.storage.base import ObjectNotFound
from shared.domain import refusals
from shared.domain.manifest import Manifest, read_manifest
from shared.records.job import Job
from workers import restore_set
from workers.context import Context, Progress, cancel_check
from workers.errors import JobCancelled, PermanentError, is_transient

log = logging.getLogger("qbm.worker.restore")

PREPARE_END, RECOVER_END = 5, 90
#: Sent when the job names none: Qdrant's own default (``#[default] Snapshot``), said out loud so that a server
#: whose default differs (older documentation says ``replica``) behaves the same.
DEFAULT_PRIORITY = "snapshot"
PRESIGN_FOR = timedelta(hours=12)


def _manifest(job: Job) -> Manifest:
    return Manifest(**job.steps["prepare"]["manifest"])


def prepare(ctx: Context, job: Job) -> dict:
    """Find the backup by its id in the job's storage and check that it is whole; a collection restore whose
    target exists must say ``metadata.replace: true`` (checked here, once: the recover step may find the
    target made by its own earlier attempt)."""
    if job.type == "restore" and job.metadata.get("replace") is not True:
        _refuse_existing_target(ctx, job.target_collection)
    _, storage = ctx.storage_for(job)
    manifest = read_manifest(storage, job.collection_name, job.snapshot_name or "")
    refused = refusals.wrong_kind(manifest, job.type, job.shard_id)
    if refused:
        raise PermanentError(refused)
    if manifest.kind == "set":
        restore_set.check_files(storage, manifest)
        ctx.jobs.set_progress(job.id, PREPARE_END)
        return {"manifest": asdict(manifest)}
    try:
        info = storage.stat(manifest.key)
    except ObjectNotFound:
        raise PermanentError(f"backup {manifest.backup_id}: its snapshot file {manifest.key} is missing") from None
    if info.size != manifest.size:
        raise PermanentError(
            f"backup {manifest.backup_id}: snapshot file is {info.size} bytes, the manifest says {manifest.size}"
        )
    ctx.jobs.set_progress(job.id, PREPARE_END)
    return {"manifest": asdict(manifest)}


def _refuse_existing_target(ctx: Context, target: str) -> None:
    try:
        ctx.qdrant.collection_info(target)
    except QdrantError as exc:
        if exc.status == 404:
            return
        raise
    raise PermanentError(refusals.target_exists(target))


class _CountingReader:
    """Wraps a storage stream for upload: reports bytes read and stops the upload when cancelled."""

    def __init__(self, raw: BinaryIO, progress: Callable[[int], None], should_continue: Callable[[], bool]) -> None:
        self.raw, self.progress, self.should_continue = raw, progress, should_continue
        self.done = 0

    def read(self, n: int = -1) -> bytes:
        if not self.should_continue():
            raise JobCancelled("cancelled during upload")
        data = self.raw.read(n)
        self.done += len(data)
        self.progress(self.done)
        return data


def recover(ctx: Context, job: Job) -> dict:
    manifest = _manifest(job)
    cfg, storage = ctx.storage_for(job)
    target, shard = job.target_collection, job.shard_id
    priority = job.metadata.get("priority") or DEFAULT_PRIORITY
    if manifest.kind == "set":
        result = restore_set.recover(ctx, job, manifest, cfg["type"], storage, priority)
        ctx.jobs.set_progress(job.id, RECOVER_END)
        return result
    qdrant = ctx.qdrant_for(job)
    try:
        if cfg["type"] == "s3" and not job.metadata.get("upload"):
            url = storage.presigned_get_url(manifest.key, PRESIGN_FOR)
            qdrant.recover_from_url(target, url, shard_id=shard, priority=priority, checksum=manifest.sha256)
        else:
            upload_name = f"qbm-restore-{job.id}.snapshot"
            progress = Progress(ctx.jobs, job.id, PREPARE_END, RECOVER_END, manifest.size)
            meter = ctx.transfer_meter(job, "restore", storage.kind)
            with storage.open(manifest.key) as raw, meter:
                reader = _CountingReader(raw, meter.tracking(progress), cancel_check(ctx.jobs, job.id))
                try:
                    qdrant.upload_and_recover(target, reader, shard_id=shard, filename=upload_name,  # type: ignore[arg-type]
                                                  size=manifest.size, priority=priority, checksum=manifest.sha256)
                finally:
                    _delete_uploaded(qdrant, job, upload_name)
            progress.finish(reader.done)
    except QdrantError as exc:
        if not is_transient(exc):
            raise PermanentError(f"Qdrant refused to recover {target!r} from backup "
                                 f"{manifest.backup_id}: {exc.message} (HTTP {exc.status})") from exc
        raise
    ctx.jobs.set_progress(job.id, RECOVER_END)
    return {"target": target}


def _delete_uploaded(qdrant: QdrantClient, job: Job, name: str) -> None:
    try:
        qdrant.delete_snapshot(job.target_collection, name, shard_id=job.shard_id, wait=True)
    except QdrantError as exc:
        if exc.status != 404:
            log.warning("could not delete uploaded snapshot %s on Qdrant: %s", name, exc,
                        extra={"job_id": job.id, "collection": job.target_collection})


def verify(ctx: Context, job: Job) -> None:
    """The collection (or shard) exists again and holds as many points as the backup did (an exact count for a
    collection; for a shard, the count its node reports)."""
    manifest = _manifest(job)
    target, shard = job.target_collection, job.shard_id
    if manifest.kind == "set":
        checked = restore_set.verify(ctx, job, manifest)
        ctx.jobs.merge_metadata(job.id, {**checked, "target_collection": target, "sha256": manifest.sha256,
                                         "size": manifest.size, "kind": "set"})
        return
    try:
        if shard is None:
            points = ctx.qdrant.count_points(target, exact=True)
        else:
            shards = ctx.qdrant_for(job).collection_cluster_info(target).get("local_shards", [])
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
    ctx.jobs.merge_metadata(job.id, {"restored_points": points, "target_collection": target,
                                     "sha256": manifest.sha256, "size": manifest.size})
