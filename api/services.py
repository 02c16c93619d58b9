"""The per-app bundle of collaborators the views use (kept apart from app.py so views can import it)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import redis
from flask import current_app

from scheduler.store import ScheduleStore
from shared.config import Config
from shared.jobs import JobStore
from shared.qdrant import QdrantClient
from shared.storage_configs import StorageConfigStore
from shared.submit import JobSubmitter
from workers.dispatch import Enqueue


@dataclass
class Services:
    """Built once per app from the configuration: one Redis pool, one Qdrant client, the stores."""

    config: Config
    redis: redis.Redis
    jobs: JobStore
    storage_configs: StorageConfigStore
    qdrant: QdrantClient
    enqueue: Enqueue

    @cached_property
    def submitter(self) -> JobSubmitter:
        """Creates jobs: the one code path shared with the scheduler."""
        return JobSubmitter(self.jobs, self.storage_configs, self.enqueue)

    @cached_property
    def schedules(self) -> ScheduleStore:
        return ScheduleStore(self.redis, self.config.key_prefix)


def services() -> Services:
    """The current app's services (``app.extensions["qbm"]``)."""
    return current_app.extensions["qbm"]
