"""The one place that builds a process's collaborators from its configuration.

The API, every worker process and the scheduler each build one :class:`Services` at start and use nothing
else: one Redis client (and so one connection pool) per process, shared by the job, storage-config and
schedule stores, the Dramatiq broker that hands jobs to the workers, and the submitter. Everything is built
lazily enough that a process starts while Redis or Qdrant is down and reports that per request or per step.
"""

from __future__ import annotations

from functools import cached_property

import dramatiq
import redis

from shared.adapters import redis_conn
from shared.adapters.qdrant import QdrantClient
from shared.adapters.storage import Storage, from_config
from shared.adapters.topology import Topology
from shared.intake.preflight import Preflight
from shared.intake.submit import Enqueue, JobSubmitter
from shared.pipeline.broker import make_broker
from shared.pipeline.dispatch import make_enqueuer
from shared.records.job_store import JobStore
from shared.records.storage_configs import StorageConfigStore
from shared.runtime.config import Config
from shared.schedules.store import ScheduleStore

#: The API answers people and dashboards: it gives up on Qdrant quickly rather than retrying for long.
INTERACTIVE_QDRANT = {"connect_timeout": 3.0, "retries": 2, "backoff": 0.2}


def qdrant_client(config: Config, *, interactive: bool = False, url: str | None = None) -> QdrantClient:
    """The Qdrant client of ``config`` (of another peer of its cluster when ``url`` is given). Its read timeout
    bounds how long a snapshot download may stall (``QBM_QDRANT_READ_TIMEOUT``); ``interactive`` clients (the
    API's) also fail over fast."""
    extra = INTERACTIVE_QDRANT if interactive else {}
    return QdrantClient(url or config.qdrant_url, config.qdrant_api_key, read_timeout=config.qdrant_read_timeout,
                        **extra)


class Services:
    """What a QBM process works with, built from its config (``redis``, ``qdrant`` and ``enqueue`` can be
    given instead, for tests that observe them)."""

    def __init__(self, config: Config, *, redis_client: redis.Redis | None = None,
                 qdrant: QdrantClient | None = None, enqueue: Enqueue | None = None,
                 interactive: bool = False) -> None:
        self.config = config
        self.redis = redis_client if redis_client is not None else redis_conn.from_config(config)
        self.qdrant = qdrant if qdrant is not None else qdrant_client(config, interactive=interactive)
        self.jobs = JobStore(self.redis, config.key_prefix)
        self.storage_configs = StorageConfigStore(self.redis, config.key_prefix, config.secret_keys)
        self.schedules = ScheduleStore(self.redis, config.key_prefix)
        self._enqueue = enqueue
        self._interactive = interactive

    @cached_property
    def topology(self) -> Topology:
        """The cluster's peers (with their REST URLs, QBM_QDRANT_PEERS) and collections' shard layouts."""
        return Topology(self.qdrant, self.config.qdrant_peers,
                        lambda url: qdrant_client(self.config, interactive=self._interactive, url=url))

    @cached_property
    def broker(self) -> dramatiq.Broker:
        """The Dramatiq broker on this process's Redis client (its keys under the key prefix)."""
        return make_broker(self.config, self.redis)

    @cached_property
    def enqueue(self) -> Enqueue:
        """Hands a stored job's next step to the workers."""
        return self._enqueue if self._enqueue is not None else make_enqueuer(self.broker, self.jobs)

    @cached_property
    def submitter(self) -> JobSubmitter:
        """Creates jobs: the one code path of POST /jobs, schedules and "run now"."""
        return JobSubmitter(self.jobs, self.storage_configs, self.enqueue,
                            preflight=Preflight(self.qdrant, self.open_storage))

    def open_storage(self, storage_id: str) -> tuple[dict, Storage]:
        """A saved backend's config (with its secret) and the backend itself.

        Raises ``StorageConfigNotFound``, ``SecretKeyError`` (QBM_SECRET_KEY cannot decrypt it) or
        ``PathNotAllowed`` (a local root no longer under QBM_STORAGE_ROOTS)."""
        cfg = self.storage_configs.get(storage_id, with_secret=True)
        return cfg, from_config(cfg, allowed_roots=self.config.storage_roots)
