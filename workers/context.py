"""What a step works with: the process's :class:`shared.services.Services` plus what only workers need.

Built once per worker process (:func:`workers.process` builds it from the environment; tests build their own).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from shared.adapters.qdrant import QdrantClient
from shared.adapters.secret_box import SecretKeyError
from shared.adapters.storage import Storage
from shared.adapters.topology import parse_layout
from shared.records.job import ACTIVE_STATUSES, Job, JobStatus
from shared.records.job_store import JobStore
from shared.records.storage_configs import StorageConfigNotFound
from shared.runtime.metrics import TransferMeter, record_job_end
from shared.services import Services
from workers.errors import JobCancelled, PermanentError

log = logging.getLogger("qbm.worker")


class Context(Services):
    def qdrant_for(self, job: Job) -> QdrantClient:
        """The node a job's Qdrant calls go to: QBM_QDRANT_URL's, except for a shard job in a cluster, which talks
        to a peer holding an Active replica of its shard (chosen once, kept as ``metadata.peer_url``)."""
        if job.shard_id is None:
            return self.qdrant
        url = job.metadata.get("peer_url")
        if not url:
            collection = job.target_collection if job.family == "restore" else job.collection_name
            url = self._shard_peer_url(collection, job.shard_id)
            if url != self.qdrant.url:
                self.jobs.merge_metadata(job.id, {"peer_url": url})
        return self.qdrant if url == self.qdrant.url else self.topology.client_for(url)

    def _shard_peer_url(self, collection: str, shard_id: int) -> str:
        peers = self.topology.peers()
        if len(peers) <= 1:
            return self.qdrant.url
        info = self.qdrant.collection_cluster_info(collection)
        if any(s.get("shard_id") == shard_id and s.get("state") == "Active" for s in info.get("local_shards") or []):
            return self.qdrant.url
        shard = parse_layout(collection, info).shards.get(shard_id)
        active = [pid for pid in (shard.active_peers() if shard else []) if pid in peers]
        # No Active replica anywhere: ask the node QBM knows, whose answer says what is wrong.
        return peers[active[0]].rest_url if active else self.qdrant.url

    def storage_for(self, job: Job) -> tuple[dict, Storage]:
        """The job's storage backend; a backend that vanished or cannot be decrypted fails the job."""
        storage_id = job.storage_id
        if not storage_id:
            raise PermanentError("the job names no storage backend")
        try:
            return self.open_storage(storage_id)
        except StorageConfigNotFound:
            raise PermanentError(f"storage backend {storage_id!r} no longer exists") from None
        except SecretKeyError as exc:  # the operator must fix QBM_SECRET_KEY; a retry after that works
            raise PermanentError(f"storage backend {storage_id!r}: {exc}") from None

    def transfer_meter(self, job: Job, direction: str, backend: str) -> TransferMeter:
        """Byte counts and the active-transfer gauge for GET /metrics (see shared/runtime/metrics.py)."""
        return TransferMeter(self.redis, self.config.key_prefix, direction=direction, backend=backend,
                             job_id=job.id)

    def record_job_end(self, job_id: str) -> None:
        """Add the ended job's run time to the duration histogram; a metrics problem never fails a job."""
        try:
            record_job_end(self.redis, self.config.key_prefix, self.jobs.get(job_id))
        except Exception as exc:  # noqa: BLE001
            log.warning("could not record job duration: %s", exc, extra={"job_id": job_id})

    def lease_key(self, job: Job) -> str:
        """One job at a time per collection (or shard) it writes to: a backup's own, a restore's target."""
        collection = job.target_collection if job.family == "restore" else job.collection_name
        base = f"{self.config.key_prefix}lock:c:{collection}"
        return base if job.shard_id is None else f"{base}:s:{job.shard_id}"


class Progress:
    """Maps bytes moved within one step onto the job's 0-100 progress, written with the byte counts (which the
    client's progress bar turns into speed and ETA) at most ~3 times a second."""

    def __init__(self, jobs: JobStore, job_id: str, start: int, end: int, total: int | None) -> None:
        self.jobs, self.job_id = jobs, job_id
        self.start, self.end, self.total = start, end, total
        self._last = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self._last < 0.3:
            return
        self._last = now
        fraction = min(1.0, done / self.total) if self.total else 0.0
        self.jobs.set_progress(self.job_id, int(self.start + (self.end - self.start) * fraction), moved=done,
                               total=self.total or None)

    def finish(self, done: int) -> None:
        """The transfer ended having moved ``done`` bytes: the step's end, with the final count."""
        self.jobs.set_progress(self.job_id, self.end, moved=done, total=self.total or done)


def cancel_check(jobs: JobStore, job_id: str, every: float = 0.5, *, until_ended: bool = False,
                 each_check: Callable[[], object] | None = None) -> Callable[[], bool]:
    """A ``should_continue`` callback: False once the job was cancelled (``until_ended``: once it ended in any
    way, as when another shard of a backup set failed it), checked at most every ``every`` s; ``each_check`` runs
    with every check (a stream renewing its slot)."""
    state = {"at": 0.0, "ok": True}

    def should_continue() -> bool:
        now = time.monotonic()
        if now - state["at"] >= every:
            state["at"] = now
            status = jobs.get(job_id).status
            state["ok"] = status in ACTIVE_STATUSES if until_ended else status != JobStatus.CANCELLED
            if each_check is not None:
                each_check()
        return state["ok"]

    return should_continue


def raise_if_cancelled(jobs: JobStore, job_id: str) -> None:
    if jobs.get(job_id).status == JobStatus.CANCELLED:
        raise JobCancelled(job_id)
