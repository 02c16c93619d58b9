"""Backup sets: a backup of a collection distributed over several Qdrant peers.

A collection snapshot taken through one peer holds only that peer's shards, so a distributed collection is
backed up shard by shard instead, each from one Active replica, with Qdrant's streamed shard snapshot
(``GET /collections/{c}/shards/{id}/snapshot``: archived on the fly, nothing staged on the node). The steps:

* ``create`` (:func:`plan`): the peers, the shard layout, the collection's configuration, payload indexes and
  aliases, the exact points count; records the shards to copy as the step's ``fan_out``;
* ``transfer`` (:func:`stream_shard`), one message per shard, so the workers of every machine share a set;
  each takes a stream slot on the peer it copies from (at most ``QBM_PEER_STREAMS`` per peer) and, when that
  replica dies or its peer stops answering, takes the shard again from another Active replica;
* ``finalize`` (:func:`finalize`): the set's manifest, written last. A set missing a shard has no manifest
  and is never listed.

Consistency: a set does not start while the collection has shard transfers or resharding under way
(:func:`wait_reason`, the frame's gate: the job stays pending and says why).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from shared.adapters.locks import Slots
from shared.adapters.qdrant import QdrantError
from shared.adapters.storage import Storage
from shared.adapters.storage.base import Cancelled
from shared.adapters.topology import Layout, Peer
from shared.domain.manifest import Manifest, backup_prefix, qbm_version, set_digest, snapshot_key, write_manifest
from shared.pipeline.chains import item_record
from shared.records.job import Job, JobStatus
from shared.runtime.timeutil import utcnow_iso
from workers.context import Context, cancel_check, raise_if_cancelled
from workers.errors import JobCancelled, PermanentError, TryLater, describe

log = logging.getLogger("qbm.worker.backup_set")

CREATE_END, TRANSFER_END = 10, 95
#: How long a stream slot on a peer lives without renewal (a worker that died frees it after this).
SLOT_TTL_MS = 60_000


def is_set(job: Job) -> bool:
    """True when the job's ``create`` step planned a backup set (it recorded the shards to copy)."""
    return "fan_out" in (job.steps.get("create") or {})


def wait_reason(ctx: Context, job: Job) -> str | None:
    """Why a backup set of this collection must not start now (shard transfers or resharding), else None.
    Only distributed collection backups wait; if Qdrant cannot be asked, the step finds out for itself."""
    if job.shard_id is not None or "create" in job.steps:
        return None
    try:
        if not ctx.topology.distributed():
            return None
        return ctx.topology.layout(job.collection_name).busy_reason()
    except QdrantError:
        return None


def plan(ctx: Context, job: Job, backup_id: str) -> dict:
    """What the set will hold, read before any byte moves (see the module docstring)."""
    c = job.collection_name
    topology = ctx.topology
    peers = topology.peers()
    layout = topology.layout(c)
    busy = layout.busy_reason()
    if busy:
        raise TryLater(busy, 5_000)
    for shard in layout.shards.values():
        if not shard.active_peers():
            raise PermanentError(_no_replica(c, shard.shard_id, shard.describe_replicas()))
    info = ctx.qdrant.collection_info(c)
    total = ctx.qdrant.count_points(c, exact=True)
    counts = topology.shard_counts(c, layout, peers)
    result = {
        "backup_id": backup_id,
        "fan_out": sorted(layout.shards),
        "points_count": total,
        "qdrant_version": ctx.qdrant.version(),
        "collection_config": info.get("config") or {},
        "payload_schema": info.get("payload_schema") or {},
        "aliases": ctx.qdrant.collection_aliases(c),
        "topology": {
            "peers": {str(p.peer_id): {"rest_url": p.rest_url, "p2p_uri": p.p2p_uri} for p in peers.values()},
            "shards": {str(s.shard_id): {"replicas": [[r.peer_id, r.state] for r in s.replicas],
                                         "shard_key": s.shard_key, "points_count": counts.get(s.shard_id)}
                       for s in layout.shards.values()},
            # Qdrant counts a shard only approximately; when those figures add up to the exact total, each is
            # exact too (a restore then checks every shard against its figure).
            "shard_counts_exact": set(counts) == set(layout.shards) and sum(counts.values()) == total,
            "shard_keys": _shard_keys(ctx, c, layout, info),
        },
    }
    ctx.jobs.set_progress(job.id, CREATE_END)
    return result


def stream_shard(ctx: Context, job: Job, shard_id: int) -> dict:
    """Copy one shard into storage from one of its Active replicas, trying the next one when a replica fails."""
    c = job.collection_name
    made = job.steps["create"]
    _, storage = ctx.storage_for(job)
    key = snapshot_key(c, made["backup_id"], shard_id)
    peers = ctx.topology.peers()
    shard = ctx.topology.layout(c).shards.get(shard_id)  # read again: a replica may have died since the plan
    if shard is None:
        raise PermanentError(f"shard {shard_id} of collection {c!r} is no longer in its layout; retry the job")
    candidates = [pid for pid in shard.active_peers() if pid in peers]
    if not candidates:
        raise PermanentError(_no_replica(c, shard_id, shard.describe_replicas()))
    turn = shard_id % len(candidates)  # spread the shards over their replicas' peers
    candidates = candidates[turn:] + candidates[:turn]
    holder = f"{job.id}:{shard_id}"
    progress = SetProgress(ctx, job, made["fan_out"])
    failures: list[str] = []
    last: QdrantError | None = None
    for pid in candidates:
        slots = Slots(ctx.redis, f"{ctx.config.key_prefix}peer-streams:{pid}", ctx.config.peer_stream_limit,
                      SLOT_TTL_MS)
        if not slots.take(holder):
            continue
        try:
            result = _copy(ctx, job, storage, key, shard_id, peers[pid], progress, lambda s=slots: s.take(holder))
        except QdrantError as exc:
            if exc.status in (401, 403):
                raise
            failures.append(f"peer {pid}: {describe(exc)}")
            last = exc
            log.warning("shard %s of %s: copy from peer %s failed, trying another replica: %s", shard_id, c, pid,
                        describe(exc), extra={"job_id": job.id, "collection": c})
            continue
        finally:
            slots.release(holder)
        planned = (made.get("topology") or {}).get("shards", {}).get(str(shard_id)) or {}
        result["points_count"] = planned.get("points_count")
        result["shard_key"] = planned.get("shard_key")
        progress.shard_done(shard_id, result["size"])
        return result
    if last is not None:
        if not last.transient:
            raise PermanentError(f"shard {shard_id} of collection {c!r} could not be copied from any replica: "
                                 + "; ".join(failures))
        raise last  # retried with backoff; the layout is read again then
    raise TryLater(f"every peer holding shard {shard_id} serves {ctx.config.peer_stream_limit} stream(s) already")


def _copy(ctx: Context, job: Job, storage: Storage, key: str, shard_id: int, peer: Peer, progress: SetProgress,
          renew_slot: Callable[[], object]) -> dict:
    storage.abort_incomplete(key)  # what a crashed earlier attempt of this shard left; other shards untouched
    meter = ctx.transfer_meter(job, "backup", storage.kind)
    # Stops once the job ended (cancelled, or failed by another shard); renews the peer's stream slot as it goes.
    keep_going = cancel_check(ctx.jobs, job.id, every=1.0, until_ended=True, each_check=renew_slot)
    try:
        with ctx.topology.client_for(peer).stream_shard_snapshot(job.collection_name, shard_id) as download, meter:
            written = storage.write(key, download, on_progress=meter.tracking(progress.tracker(shard_id)),
                                    should_continue=keep_going)
    except Cancelled as exc:
        if ctx.jobs.get(job.id).status == JobStatus.CANCELLED:
            raise JobCancelled(job.id) from exc
        raise PermanentError("the backup set stopped: another of its shards failed") from exc
    return {"shard_id": shard_id, "key": key, "size": written.size, "sha256": written.sha256,
            "peer_id": peer.peer_id, "peer_url": peer.rest_url}


class SetProgress:
    """A set's progress by bytes over all its shards, whichever workers copy them: each stream writes its byte
    count into one Redis hash per job (``shard -> bytes``, completed shards marked), and the job's progress is the
    bytes copied over the set's expected size. A streamed shard's size is known only once it is complete, so the
    shards still missing are assumed as big as the average completed one (nothing moves before one is)."""

    def __init__(self, ctx: Context, job: Job, shards: list[int]) -> None:
        self.ctx, self.job, self.shards = ctx, job, shards
        self.key = f"{ctx.config.key_prefix}set-bytes:{job.id}"
        self._last = 0.0

    def tracker(self, shard_id: int) -> Callable[[int], None]:
        def track(done: int) -> None:
            now = time.monotonic()
            if now - self._last >= 1.0:
                self._last = now
                self.ctx.redis.hset(self.key, str(shard_id), done)
                self._publish()
        return track

    def shard_done(self, shard_id: int, size: int) -> None:
        self.ctx.redis.hset(self.key, mapping={str(shard_id): size, f"done:{shard_id}": size})
        self.ctx.redis.expire(self.key, 7 * 24 * 3600)
        self._publish()

    def _publish(self) -> None:
        raw = {k.decode(): int(v) for k, v in self.ctx.redis.hgetall(self.key).items()}
        done = [v for k, v in raw.items() if k.startswith("done:")]
        if not done:
            return
        copied = sum(v for k, v in raw.items() if not k.startswith("done:"))
        expected = max(copied, sum(done) + (len(self.shards) - len(done)) * sum(done) / len(done))
        fraction = min(1.0, copied / expected) if expected else 1.0
        self.ctx.jobs.set_progress(self.job.id, CREATE_END + int((TRANSFER_END - CREATE_END) * fraction),
                                   moved=copied, total=int(expected))


def finalize(ctx: Context, job: Job) -> dict:
    """Write the set's manifest, last: from then on the set is a backup."""
    made = job.steps["create"]
    raise_if_cancelled(ctx.jobs, job.id)
    shards = [job.steps[item_record("transfer", sid)] for sid in made["fan_out"]]
    _, storage = ctx.storage_for(job)
    manifest = Manifest(
        backup_id=made["backup_id"],
        job_id=job.id,
        type=str(job.type),
        collection=job.collection_name,
        shard_id=None,
        qdrant_snapshot_name="",
        key=backup_prefix(job.collection_name, made["backup_id"]),
        size=sum(s["size"] for s in shards),
        sha256=set_digest(shards),
        created_at=job.steps.get("create_started", {}).get("at") or utcnow_iso(),
        qdrant_version=made.get("qdrant_version"),
        points_count=made.get("points_count"),
        qbm_version=qbm_version(),
        schedule_id=job.schedule_id,
        format=2,
        kind="set",
        shards=shards,
        collection_config=made.get("collection_config"),
        payload_schema=made.get("payload_schema"),
        aliases=made.get("aliases"),
        topology=made.get("topology"),
    )
    write_manifest(storage, manifest)
    ctx.redis.delete(SetProgress(ctx, job, made["fan_out"]).key)
    ctx.jobs.merge_metadata(job.id, {"key": manifest.key, "size": manifest.size, "sha256": manifest.sha256,
                                     "kind": "set", "shards": len(shards)})
    return {"at": utcnow_iso()}


def _shard_keys(ctx: Context, collection: str, layout: Layout, info: dict) -> list[dict] | None:
    """A custom-sharded collection's shard keys, each with its shards and its exact points count (Qdrant counts
    exactly per shard key); None for a collection sharded automatically."""
    if ((info.get("config") or {}).get("params") or {}).get("sharding_method") != "custom":
        return None
    by_key: dict[str, dict] = {}
    for shard in layout.shards.values():
        entry = by_key.setdefault(json.dumps(shard.shard_key), {"key": shard.shard_key, "shards": []})
        entry["shards"].append(shard.shard_id)
    keys = sorted(by_key.values(), key=lambda e: min(e["shards"]))
    for entry in keys:
        entry["points_count"] = ctx.qdrant.count_points(collection, exact=True, shard_key=entry["key"])
    return keys


def _no_replica(collection: str, shard_id: int, replicas: str) -> str:
    return (f"shard {shard_id} of collection {collection!r} has no Active replica to copy from ({replicas}); "
            "the backup set cannot be complete")
