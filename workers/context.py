"""What a step needs, built once per worker process from the environment's configuration."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from shared.adapters import redis_conn
from shared.adapters.qdrant import QdrantClient
from shared.adapters.secret_box import SecretKeyError
from shared.adapters.storage import Storage, from_config
from shared.records.job_store import JobStore
from shared.records.storage_configs import StorageConfigNotFound, StorageConfigStore
from shared.runtime.config import Config, load_config
from shared.runtime.metrics import TransferMeter, record_job_end
from workers.errors import JobCancelled, PermanentError

log = logging.getLogger("qbm.worker")


@dataclass
class Context:
    config: Config
    redis: redis.Redis
    jobs: JobStore
    storages: StorageConfigStore
    qdrant: QdrantClient

    @classmethod
    def from_config(cls, config: Config) -> Context:
        client = redis_conn.from_config(config)
        return cls(
            config=config,
            redis=client,
            jobs=JobStore(client, config.key_prefix),
            storages=StorageConfigStore(client, config.key_prefix, config.secret_keys),
            # The read timeout bounds how long a snapshot download may stall (QBM_QDRANT_READ_TIMEOUT).
            qdrant=QdrantClient(config.qdrant_url, config.qdrant_api_key,
                                read_timeout=config.qdrant_read_timeout),
        )

    def storage_for(self, job: dict) -> tuple[dict, Storage]:
        storage_id = (job.get("metadata") or {}).get("storage_id")
        try:
            cfg = self.storages.get(storage_id, with_secret=True) if storage_id else None
        except StorageConfigNotFound:
            cfg = None
        except SecretKeyError as exc:  # the operator must fix QBM_SECRET_KEY; a retry after that works
            raise PermanentError(f"storage backend {storage_id!r}: {exc}") from None
        if cfg is None:
            raise PermanentError(f"storage backend {storage_id!r} no longer exists")
        return cfg, from_config(cfg, allowed_roots=self.config.storage_roots)

    def transfer_meter(self, job: dict, direction: str, backend: str) -> TransferMeter:
        """Byte counts and the active-transfer gauge for GET /metrics (see shared/runtime/metrics.py)."""
        return TransferMeter(self.redis, self.config.key_prefix, direction=direction, backend=backend,
                             job_id=job["id"])

    def record_job_end(self, job_id: str) -> None:
        """Add the ended job's run time to the duration histogram; a metrics problem never fails a job."""
        try:
            record_job_end(self.redis, self.config.key_prefix, self.jobs.get(job_id))
        except Exception as exc:  # noqa: BLE001
            log.warning("could not record job duration: %s", exc, extra={"job_id": job_id})

    def lease_key(self, job: dict, collection: str) -> str:
        base = f"{self.config.key_prefix}lock:c:{collection}"
        return base if job.get("shard_id") is None else f"{base}:s:{job['shard_id']}"


@functools.cache
def get_context() -> Context:
    return Context.from_config(load_config())


class Progress:
    """Maps bytes moved within one step onto the job's 0-100 progress, written at most ~3 times a second."""

    def __init__(self, jobs: JobStore, job_id: str, start: int, end: int, total: int | None) -> None:
        self.jobs, self.job_id = jobs, job_id
        self.start, self.end, self.total = start, end, total
        self._last = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self._last < 0.3 or not self.total:
            return
        self._last = now
        fraction = min(1.0, done / self.total)
        self.jobs.set_progress(self.job_id, int(self.start + (self.end - self.start) * fraction))


def cancel_check(jobs: JobStore, job_id: str, every: float = 0.5) -> Callable[[], bool]:
    """A ``should_continue`` callback: False once the job was cancelled (checked at most every ``every`` s)."""
    state = {"at": 0.0, "ok": True}

    def should_continue() -> bool:
        now = time.monotonic()
        if now - state["at"] >= every:
            state["at"] = now
            state["ok"] = jobs.get(job_id)["status"] != "cancelled"
        return state["ok"]

    return should_continue


def raise_if_cancelled(jobs: JobStore, job_id: str) -> None:
    if jobs.get(job_id)["status"] == "cancelled":
        raise JobCancelled(job_id)
