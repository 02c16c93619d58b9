"""The per-app bundle of collaborators the views use (kept apart from app.py so views can import it)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import redis
from flask import current_app

from shared.adapters.qdrant import QdrantClient
from shared.intake.submit import JobSubmitter
from shared.pipeline.dispatch import Enqueue
from shared.records.job_store import JobStore
from shared.records.storage_configs import StorageConfigStore
from shared.runtime.config import Config
from shared.schedules.store import ScheduleStore


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
