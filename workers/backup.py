"""The backup chain: create a snapshot on Qdrant, stream it into storage, then write the manifest.

Each step returns what it made and the frame records it in the job hash, so a redelivered message (after a
worker crash) or a retry resumes where the job stopped instead of starting over. ``backup`` and
``shard_backup`` jobs share these steps; the job's ``shard_id`` scopes every Qdrant call.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime

from shared.adapters.qdrant import QdrantClient, QdrantError
from shared.adapters.storage.base import Cancelled
from shared.domain import refusals
from shared.domain.manifest import Manifest, backup_prefix, new_backup_id, qbm_version, snapshot_key, write_manifest
from shared.records.job import Job
from shared.runtime.timeutil import parse_iso, utcnow_iso
from workers import backup_set
from workers.context import Context, Progress, cancel_check, raise_if_cancelled
from workers.errors import JobCancelled, PermanentError

log = logging.getLogger("qbm.worker.backup")

CREATE_END, TRANSFER_END = 10, 95


#: How long a listed snapshot may show no checksum: Qdrant renames the snapshot into place first and writes
#: its ``.checksum`` sidecar right after, so a listing in between is a snapshot still in flight.
CHECKSUM_WAIT_SECONDS = 30.0


def _points_count(ctx: Context, job: Job, client: QdrantClient) -> int | None:
    """The exact count for a collection (collection info's is an estimate); a shard's count is the one its
    node reports in the shard layout (Qdrant has no exact count per shard id)."""
    c, shard = job.collection_name, job.shard_id
    if shard is None:
        return client.count_points(c, exact=True)
    info = client.collection_cluster_info(c)
    for local in info.get("local_shards", []):
        if local.get("shard_id") == shard:
            return local.get("points_count")
    raise PermanentError(refusals.shard_not_on_node(c, shard, client.url))


def create(ctx: Context, job: Job) -> dict:
    """Ask Qdrant for a snapshot (``wait=true``: it may take hours) and remember its name."""
    backup_id = job.snapshot_name or new_backup_id()
    if not job.snapshot_name:
        ctx.jobs.update(job.id, snapshot_name=backup_id)
    try:
        if job.shard_id is None and ctx.topology.distributed():
            if "create_started" not in job.steps:
                ctx.jobs.record_step(job.id, "create_started", {"at": utcnow_iso()})
            return backup_set.plan(ctx, job, backup_id)
        client = ctx.qdrant_for(job)  # resolved once: for a shard in a cluster, a peer holding it
        points = _points_count(ctx, job, client)
        qdrant_version = client.version()
        started = job.steps.get("create_started")
        snapshot = _adopt(ctx, job, started["at"], client) if started else None
        if snapshot is None:
            ctx.jobs.record_step(job.id, "create_started", {"at": utcnow_iso()})
            snapshot = client.create_snapshot(job.collection_name, shard_id=job.shard_id, wait=True)
    except QdrantError as exc:
        if exc.status == 404:
            raise PermanentError(refusals.no_collection(job.collection_name, exc.message)) from exc
        raise
    if not snapshot or not snapshot.get("name"):
        raise PermanentError("Qdrant accepted the snapshot request but returned no snapshot description")
    if not snapshot.get("checksum"):
        snapshot = wait_for_checksum(ctx, job, snapshot, client=client)
    if not snapshot.get("checksum"):
        ctx.jobs.merge_metadata(job.id, {"qdrant_checksum": None})
    ctx.jobs.set_progress(job.id, CREATE_END)
    return {
        "backup_id": backup_id,
        "snapshot": snapshot["name"],
        "size": snapshot.get("size"),
        "checksum": snapshot.get("checksum"),
        "points_count": points,
        "qdrant_version": qdrant_version,
    }


def _adopt(ctx: Context, job: Job, started_at: str, client: QdrantClient | None = None) -> dict | None:
    """After a crash during creation, Qdrant may have finished the snapshot anyway (the work runs server
    side): reuse the newest snapshot listed since our first attempt instead of making a second one.
    A listed snapshot is complete (Qdrant renames it into place when done)."""
    since = parse_iso(started_at).timestamp() - 1
    client = client or ctx.qdrant_for(job)
    listed = client.list_snapshots(job.collection_name, shard_id=job.shard_id)
    found = [(made, s) for s in listed if (made := _made_at(s)) is not None and made >= since]
    if not found:
        return None
    newest = max(found, key=lambda pair: pair[0])[1]
    return newest if newest.get("checksum") else wait_for_checksum(ctx, job, newest, client=client)


#: The time Qdrant puts in every snapshot's name: ``{collection}-{peer}-2026-12-01-21-40-05.snapshot``.
_NAME_TIME = re.compile(r"-(\d{4})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})\.snapshot$")


def _made_at(snapshot: dict) -> float | None:
    """When the snapshot was made: its ``creation_time``, or (Qdrant may give ``null``) the time in its name."""
    if snapshot.get("creation_time"):
        return parse_iso(snapshot["creation_time"]).timestamp()
    match = _NAME_TIME.search(snapshot.get("name") or "")
    if match is None:
        return None
    return datetime(*map(int, match.groups()), tzinfo=UTC).timestamp()


def wait_for_checksum(ctx: Context, job: Job, snapshot: dict, timeout: float = CHECKSUM_WAIT_SECONDS, *,
                      client: QdrantClient | None = None) -> dict:
    """The snapshot's description once Qdrant has written its checksum (see CHECKSUM_WAIT_SECONDS). A Qdrant
    that keeps its snapshots in S3 never writes one: after ``timeout`` the description is returned as it is
    and the backup relies on the sha256 QBM computes while copying (the job's metadata says so)."""
    client = client or ctx.qdrant_for(job)  # once, not per poll
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = client.list_snapshots(job.collection_name, shard_id=job.shard_id)
        current = next((s for s in listed if s.get("name") == snapshot["name"]), None)
        if current is None:
            return snapshot  # gone: the transfer step finds that out and says so
        if current.get("checksum"):
            return current
        time.sleep(0.2)  # polling Qdrant, not synchronising threads
    log.warning("snapshot %s has no checksum after %g s; relying on the sha256 computed while copying",
                snapshot["name"], timeout, extra={"job_id": job.id, "collection": job.collection_name})
    return snapshot


def transfer(ctx: Context, job: Job) -> dict:
    """Stream the snapshot from Qdrant into storage, hashing on the way; compare with Qdrant's checksum."""
    made = job.steps["create"]
    _, storage = ctx.storage_for(job)
    key = snapshot_key(job.collection_name, made["backup_id"], job.shard_id)
    # A crashed earlier attempt may have left a temp file or an incomplete multipart upload.
    storage.abort_incomplete(backup_prefix(job.collection_name, made["backup_id"]))
    try:
        download = ctx.qdrant_for(job).download_snapshot(job.collection_name, made["snapshot"],
                                                         shard_id=job.shard_id)
    except QdrantError as exc:
        if exc.status == 404:
            # The snapshot vanished from the node (deleted by hand, node rebuilt): take a new one.
            ctx.jobs.clear_steps(job.id)
            raise PermanentError(
                f"snapshot {made['snapshot']} disappeared from Qdrant before it was copied; retry the job "
                "to take a new one"
            ) from exc
        raise
    total = download.size or made.get("size")
    progress = Progress(ctx.jobs, job.id, CREATE_END, TRANSFER_END, total)
    meter = ctx.transfer_meter(job, "backup", storage.kind)
    try:
        with download, meter:
            result = storage.write(key, download, on_progress=meter.tracking(progress),
                                   should_continue=cancel_check(ctx.jobs, job.id), size_hint=total)
    except Cancelled as exc:
        raise JobCancelled(job.id) from exc
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
    progress.finish(result.size)
    return {"key": key, "size": result.size, "sha256": result.sha256}


def finalize(ctx: Context, job: Job) -> dict:
    """Write the manifest last (the backup exists from then on), then free the snapshot on Qdrant."""
    if backup_set.is_set(job):
        return backup_set.finalize(ctx, job)
    made, moved = job.steps["create"], job.steps["transfer"]
    raise_if_cancelled(ctx.jobs, job.id)
    _, storage = ctx.storage_for(job)
    manifest = Manifest(
        backup_id=made["backup_id"],
        job_id=job.id,
        type=str(job.type),
        collection=job.collection_name,
        shard_id=job.shard_id,
        qdrant_snapshot_name=made["snapshot"],
        key=moved["key"],
        size=moved["size"],
        sha256=moved["sha256"],
        created_at=job.steps.get("create_started", {}).get("at") or utcnow_iso(),
        qdrant_version=made.get("qdrant_version"),
        points_count=made.get("points_count"),
        qbm_version=qbm_version(),
        schedule_id=job.schedule_id,
    )
    write_manifest(storage, manifest)
    ctx.jobs.merge_metadata(job.id, {
        "key": moved["key"],
        "size": moved["size"],
        "sha256": moved["sha256"],
        "qdrant_snapshot": made["snapshot"],
    })
    if not job.metadata.get("keep_on_qdrant"):
        delete_qdrant_snapshot(ctx, job, made["snapshot"])
    return {"at": utcnow_iso()}


def delete_qdrant_snapshot(ctx: Context, job: Job, name: str) -> None:
    try:
        ctx.qdrant_for(job).delete_snapshot(job.collection_name, name, shard_id=job.shard_id, wait=True)
    except QdrantError as exc:
        if exc.status != 404:
            log.warning("could not delete snapshot %s on Qdrant: %s", name, exc,
                        extra={"job_id": job.id, "collection": job.collection_name})


def cleanup_cancelled(ctx: Context, job: Job) -> None:
    """Undo what a cancelled backup made: its Qdrant snapshot and any unfinished object in storage.

    A backup whose manifest was already written is complete and is left alone. ``job`` carries its steps."""
    if "finalize" in job.steps:
        return
    made = job.steps.get("create")
    if made:
        if made.get("snapshot"):  # a backup set streams its shards and leaves nothing on the nodes
            delete_qdrant_snapshot(ctx, job, made["snapshot"])
        try:
            _, storage = ctx.storage_for(job)
            prefix = backup_prefix(job.collection_name, made["backup_id"])
            storage.abort_incomplete(prefix)
            storage.delete_prefix(prefix)
        except PermanentError:
            pass
    ctx.jobs.clear_steps(job.id)
